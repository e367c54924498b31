//! CRI `ImageService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::image_service_server::ImageService;
use super::proto::*;
use super::{convert, handle, required, status_of, validate, Services};
use crate::image::registry::Credentials;

pub struct Images {
    services: Arc<Services>,
}

impl Images {
    pub fn new(services: Arc<Services>) -> Self {
        Images { services }
    }

    /// Every image, or the one `filter` names.
    fn list(&self, filter: Option<&ImageFilter>) -> Result<Vec<Image>, Status> {
        let images = &self.services.images;
        let wanted = filter
            .and_then(|f| f.image.as_ref())
            .map(|s| s.image.trim())
            .filter(|name| !name.is_empty());
        if let Some(name) = wanted {
            validate::image_name(name)?;
        }
        let records = match wanted {
            Some(name) => images
                .resolve(name)
                .map_err(status_of)?
                .into_iter()
                .collect(),
            None => images.list(),
        };
        Ok(records.iter().map(convert::image).collect())
    }
}

/// Images per message of `StreamImages`, keeping each well under the
/// message size limit.
const IMAGES_PER_MESSAGE: usize = 500;

fn image_name(spec: Option<&ImageSpec>) -> Result<&str, Status> {
    let name = spec
        .map(|s| s.image.trim())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| required("image.image"))?;
    validate::image_name(name)?;
    Ok(name)
}

fn credentials(auth: Option<&AuthConfig>) -> Result<Credentials, Status> {
    let Some(auth) = auth else {
        return Ok(Credentials::None);
    };
    Credentials::from_cri(
        &auth.username,
        &auth.password,
        &auth.auth,
        &auth.identity_token,
        &auth.registry_token,
    )
    .map_err(status_of)
}

type StreamOf<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        handle("ListImages", async {
            let images = self.list(request.get_ref().filter.as_ref())?;
            validate::fits(
                "ListImages",
                "ask for one image with a filter or use StreamImages",
                ListImagesResponse { images },
            )
        })
        .await
    }

    type StreamImagesStream = StreamOf<StreamImagesResponse>;

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        handle("StreamImages", async {
            let images = self.list(request.get_ref().filter.as_ref())?;
            let messages: Vec<Result<StreamImagesResponse, Status>> =
                validate::chunks(&images, IMAGES_PER_MESSAGE)
                    .into_iter()
                    .map(|chunk| chunk.map(|images| StreamImagesResponse { images }))
                    .collect();
            Ok(Box::pin(tokio_stream::iter(messages)) as Self::StreamImagesStream)
        })
        .await
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        handle("ImageStatus", async {
            let request = request.get_ref();
            let name = image_name(request.image.as_ref())?;
            let images = &self.services.images;
            // A missing image is an empty answer, not an error (CRI).
            let Some(record) = images.resolve(name).map_err(status_of)? else {
                return Ok(ImageStatusResponse::default());
            };
            let mut info = std::collections::HashMap::new();
            if request.verbose {
                let config = images.config_bytes(&record).map_err(status_of)?;
                let spec: serde_json::Value = config
                    .and_then(|c| serde_json::from_slice(&c).ok())
                    .unwrap_or_default();
                let verbose = serde_json::json!({
                    "imageSpec": spec,
                    "manifestDigest": record.manifest.to_string(),
                    "layers": record.layers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                });
                info.insert("info".to_string(), verbose.to_string());
            }
            Ok(ImageStatusResponse {
                image: Some(convert::image(&record)),
                info,
            })
        })
        .await
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        handle("PullImage", async {
            let request = request.get_ref();
            let name = image_name(request.image.as_ref())?;
            let credentials = credentials(request.auth.as_ref())?;
            let id = self
                .services
                .images
                .pull(name, credentials)
                .await
                .map_err(status_of)?;
            Ok(PullImageResponse {
                image_ref: id.to_string(),
            })
        })
        .await
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        handle("RemoveImage", async {
            let name = image_name(request.get_ref().image.as_ref())?;
            self.services.images.remove(name).await.map_err(status_of)?;
            Ok(RemoveImageResponse {})
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        handle("ImageFsInfo", async {
            let images = &self.services.images;
            let usage = images.fs_usage().map_err(status_of)?;
            Ok(ImageFsInfoResponse {
                image_filesystems: vec![convert::filesystem_usage(usage, images.mountpoint())],
                container_filesystems: vec![],
            })
        })
        .await
    }
}
