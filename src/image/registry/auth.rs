//! Registry authentication: credentials from CRI, `WWW-Authenticate`
//! challenges, and the distribution spec's token flow.
//!
//! Nothing secret is sent before an endpoint asks for it: the first request
//! goes out anonymous (unless the kubelet gave a ready registry token), a 401
//! tells us the endpoint's scheme, and later requests to the same origin
//! authenticate up front. Bearer tokens are cached per realm, service, scope
//! and credentials, so a token fetched with one pull's credentials never
//! serves a pull with other (or no) credentials.

use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::Url;
use serde::Deserialize;

use super::body::{error_detail, read_capped};
use super::RegistryError;
use crate::image::digest::Digest;

/// Token responses are a few KiB; anything much larger is not one.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// The distribution spec's default (and minimum) token lifetime.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they expire, so one does not run
/// out between being picked and being checked by the registry.
const TOKEN_RENEWAL_MARGIN: Duration = Duration::from_secs(10);
/// `client_id` of the OAuth2 refresh-token grant; token servers log it.
const OAUTH_CLIENT_ID: &str = "wharf";

/// Credentials for one pull, as the kubelet passes them in CRI's AuthConfig.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic {
        username: String,
        password: String,
    },
    /// CRI AuthConfig.identity_token: used as a refresh token in the OAuth2 token flow.
    IdentityToken(String),
    /// CRI AuthConfig.registry_token: a bearer token sent as is.
    RegistryToken(String),
}

impl fmt::Debug for Credentials {
    /// Secrets never reach logs; the user name is not secret and helps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { username, .. } => write!(
                f,
                "Basic {{ username: {username:?}, password: <redacted> }}"
            ),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credentials::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// From CRI AuthConfig fields. The most specific wins: a ready registry
    /// token, then an identity token (Docker stores one instead of a
    /// password), then username and password, then `auth`, which is
    /// base64("user:pass") and fills in when username and password are empty.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Credentials, RegistryError> {
        if !registry_token.is_empty() {
            return Ok(Credentials::RegistryToken(registry_token.to_string()));
        }
        if !identity_token.is_empty() {
            return Ok(Credentials::IdentityToken(identity_token.to_string()));
        }
        if !username.is_empty() {
            return Ok(Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if auth.is_empty() {
            return Ok(Credentials::None);
        }
        let invalid = |reason| RegistryError::InvalidCredentials { reason };
        let decoded = AUTH_BASE64
            .decode(auth.trim())
            .map_err(|_| invalid("auth is not valid base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| invalid("auth does not decode to UTF-8 text"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("auth does not decode to user:password"))?;
        // Some tools pad the decoded text with NULs; containerd trims them too.
        Ok(Credentials::Basic {
            username: username.to_string(),
            password: password.trim_end_matches('\0').to_string(),
        })
    }

    /// Identifies these credentials in cache keys without keeping another
    /// copy of the secret around.
    fn fingerprint(&self) -> Digest {
        let text = match self {
            Credentials::None => "none".to_string(),
            Credentials::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Credentials::IdentityToken(token) => format!("identity\0{token}"),
            Credentials::RegistryToken(token) => format!("registry\0{token}"),
        };
        Digest::of(text.as_bytes())
    }
}

/// One challenge of a `WWW-Authenticate` header: the scheme (lowercased)
/// and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): challenges separated by
/// commas, parameters as `name=token` or `name="quoted, \"escaped\""`. The
/// value is remote input, so anything odd is skipped, never fatal.
pub(crate) fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut cursor = Cursor { rest: value };
    let mut challenges: Vec<Challenge> = Vec::new();
    loop {
        cursor.skip_while(|c| c == ',' || c.is_ascii_whitespace());
        if cursor.rest.is_empty() {
            return challenges;
        }
        let token = cursor.token();
        if token.is_empty() {
            cursor.skip_char(); // not a token character: skip it
            continue;
        }
        cursor.skip_while(|c| c == ' ' || c == '\t');
        if cursor.rest.starts_with('=') {
            // A parameter of the current challenge (or token68 padding, which
            // ends up as a harmless odd parameter).
            cursor.skip_char();
            cursor.skip_while(|c| c == ' ' || c == '\t');
            let value = if cursor.rest.starts_with('"') {
                cursor.quoted_string()
            } else {
                cursor.bare_value().to_string()
            };
            if let Some(challenge) = challenges.last_mut() {
                challenge.params.push((token.to_ascii_lowercase(), value));
            }
        } else {
            challenges.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_while(&mut self, skip: impl Fn(char) -> bool) {
        self.rest = self.rest.trim_start_matches(skip);
    }

    fn skip_char(&mut self) {
        let mut chars = self.rest.chars();
        chars.next();
        self.rest = chars.as_str();
    }

    /// An RFC 7230 token, possibly empty.
    fn token(&mut self) -> &'a str {
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let end = self.rest.find(|c| !is_tchar(c)).unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        token
    }

    /// An unquoted parameter value. RFC 7235 wants a token there, but some
    /// servers send URLs unquoted, so anything up to a comma or space counts.
    fn bare_value(&mut self) -> &'a str {
        let end = self
            .rest
            .find(|c: char| c == ',' || c.is_ascii_whitespace())
            .unwrap_or(self.rest.len());
        let (value, rest) = self.rest.split_at(end);
        self.rest = rest;
        value
    }

    /// A quoted string starting at `"`; an unterminated one runs to the end.
    fn quoted_string(&mut self) -> String {
        let mut value = String::new();
        let mut chars = self.rest[1..].chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => value.extend(chars.next()),
                _ => value.push(c),
            }
        }
        self.rest = chars.as_str();
        value
    }
}

/// How an endpoint wants to be authenticated, learnt from a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthScheme {
    Basic,
    Bearer { realm: Url, service: String },
}

/// The challenge to answer: Bearer when offered with a usable realm (it
/// needs no password on the wire to the registry), else Basic.
fn choose_scheme(challenges: &[Challenge]) -> Option<AuthScheme> {
    let bearer = challenges
        .iter()
        .filter(|c| c.scheme == "bearer")
        .find_map(|c| {
            let realm = Url::parse(c.param("realm")?)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))?;
            Some(AuthScheme::Bearer {
                realm,
                service: c.param("service").unwrap_or_default().to_string(),
            })
        });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|c| c.scheme == "basic")
            .then_some(AuthScheme::Basic)
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    credentials: Digest,
}

struct CachedToken {
    authorization: HeaderValue,
    renew_at: Instant,
}

/// What every repository of a resolver learns about authentication.
#[derive(Default)]
pub(crate) struct AuthCache {
    /// Keyed by endpoint origin (`scheme://host:port`).
    schemes: Mutex<HashMap<String, AuthScheme>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
}

/// The caches hold no invariant a panic could break halfway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Authentication of one repository with one set of credentials.
pub(crate) struct Authenticator {
    cache: Arc<AuthCache>,
    credentials: Credentials,
    credentials_id: Digest,
    /// Pulling needs only `pull` on the repository, whatever other scopes
    /// a challenge lists.
    scope: String,
    request_timeout: Duration,
}

impl Authenticator {
    pub(crate) fn new(
        cache: Arc<AuthCache>,
        credentials: Credentials,
        repository_path: &str,
        request_timeout: Duration,
    ) -> Authenticator {
        Authenticator {
            cache,
            credentials_id: credentials.fingerprint(),
            credentials,
            scope: format!("repository:{repository_path}:pull"),
            request_timeout,
        }
    }

    /// The `Authorization` to send to `origin` before it asks, from what
    /// earlier challenges taught; may fetch a token with `client`.
    pub(crate) async fn authorization(
        &self,
        client: &reqwest::Client,
        origin: &str,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        if let Credentials::RegistryToken(token) = &self.credentials {
            return bearer_header(token)
                .map(Some)
                .ok_or(RegistryError::InvalidCredentials {
                    reason: "registry token is not a valid HTTP header value",
                });
        }
        let scheme = lock(&self.cache.schemes).get(origin).cloned();
        match (scheme, &self.credentials) {
            (None, _) => Ok(None),
            (Some(AuthScheme::Basic), Credentials::Basic { username, password }) => {
                Ok(Some(basic_header(username, password)))
            }
            (Some(AuthScheme::Basic), _) => Ok(None),
            (Some(AuthScheme::Bearer { realm, service }), _) => {
                self.token(client, realm, service).await.map(Some)
            }
        }
    }

    /// Learns from a 401 carrying `headers`; `rejected` is what we had sent.
    /// Returns whether a retry can send something new.
    pub(crate) fn learn_challenge(
        &self,
        origin: &str,
        headers: &HeaderMap,
        rejected: Option<&HeaderValue>,
    ) -> bool {
        if matches!(self.credentials, Credentials::RegistryToken(_)) {
            return false; // the kubelet's token is all we have
        }
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        let Some(scheme) = choose_scheme(&challenges) else {
            tracing::debug!(%origin, ?challenges, "401 without a usable challenge");
            return false;
        };
        lock(&self.cache.schemes).insert(origin.to_string(), scheme.clone());
        match scheme {
            // Retrying helps if we have a password and it was not just refused.
            AuthScheme::Basic => match &self.credentials {
                Credentials::Basic { username, password } => {
                    rejected != Some(&basic_header(username, password))
                }
                _ => false,
            },
            AuthScheme::Bearer { .. } => {
                if let Some(rejected) = rejected {
                    // Revoked or expired early: fetch a fresh one.
                    lock(&self.cache.tokens).retain(|_, token| token.authorization != rejected);
                }
                true
            }
        }
    }

    async fn token(
        &self,
        client: &reqwest::Client,
        realm: Url,
        service: String,
    ) -> Result<HeaderValue, RegistryError> {
        let key = TokenKey {
            realm: realm.to_string(),
            service,
            scope: self.scope.clone(),
            credentials: self.credentials_id.clone(),
        };
        let now = Instant::now();
        if let Some(token) = lock(&self.cache.tokens)
            .get(&key)
            .filter(|token| token.renew_at > now)
        {
            return Ok(token.authorization.clone());
        }
        let (authorization, lifetime) = self.fetch_token(client, &realm, &key.service).await?;
        let renew_at = now + lifetime.saturating_sub(TOKEN_RENEWAL_MARGIN.min(lifetime / 2));
        let mut tokens = lock(&self.cache.tokens);
        tokens.retain(|_, token| token.renew_at > now);
        tokens.insert(
            key,
            CachedToken {
                authorization: authorization.clone(),
                renew_at,
            },
        );
        Ok(authorization)
    }

    /// GET the realm (with Basic credentials when we have them), or POST a
    /// refresh-token grant for an identity token, as containerd does.
    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        realm: &Url,
        service: &str,
    ) -> Result<(HeaderValue, Duration), RegistryError> {
        let mut params = vec![("scope", self.scope.as_str())];
        if !service.is_empty() {
            params.push(("service", service));
        }
        let request = match &self.credentials {
            Credentials::IdentityToken(refresh_token) => {
                params.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.as_str()),
                    ("client_id", OAUTH_CLIENT_ID),
                ]);
                client.post(realm.clone()).form(&params)
            }
            Credentials::Basic { username, password } => client
                .get(realm.clone())
                .query(&params)
                .basic_auth(username, Some(password)),
            Credentials::None | Credentials::RegistryToken(_) => {
                client.get(realm.clone()).query(&params)
            }
        };
        let realm_text = realm.as_str();
        let response = request
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| RegistryError::from_transport(realm_text, self.request_timeout, e))?;
        let status = response.status();
        tracing::debug!(
            realm = %realm,
            scope = %self.scope,
            status = status.as_u16(),
            "token request"
        );
        if !status.is_success() {
            let retry_after = RegistryError::retry_after(&response);
            let detail = error_detail(response, self.request_timeout).await;
            return Err(RegistryError::from_status(
                status,
                realm_text.to_string(),
                detail,
                None,
                retry_after,
            ));
        }
        let body = read_capped(
            response,
            MAX_TOKEN_RESPONSE,
            realm_text,
            self.request_timeout,
        )
        .await?;
        parse_token_response(&body).map_err(|reason| RegistryError::Malformed {
            url: realm_text.to_string(),
            reason: reason.into(),
        })
    }
}

/// The `Authorization` value and lifetime from a token server's JSON.
fn parse_token_response(body: &[u8]) -> Result<(HeaderValue, Duration), &'static str> {
    #[derive(Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: String,
        /// The OAuth2 name; preferred when both are present, as Docker does.
        #[serde(default)]
        access_token: String,
        /// Seconds; lenient about its JSON type, since servers differ.
        #[serde(default)]
        expires_in: serde_json::Value,
    }
    let response: TokenResponse =
        serde_json::from_slice(body).map_err(|_| "token response is not the expected JSON")?;
    let token = if response.access_token.is_empty() {
        &response.token
    } else {
        &response.access_token
    };
    if token.is_empty() {
        return Err("token response has no token");
    }
    let authorization = bearer_header(token).ok_or("token is not a valid HTTP header value")?;
    let lifetime = response
        .expires_in
        .as_f64()
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(86400.0 * 365.0)))
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok((authorization, lifetime))
}

fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Standard base64 with padding optional: Docker config files are not
/// consistent about it.
const AUTH_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fn basic_header(username: &str, password: &str) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{password}").as_bytes());
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_base64_takes_padding_or_none_and_refuses_garbage() {
        for (plain, encoded) in [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("user:pa$$:w0rd", "dXNlcjpwYSQkOncwcmQ="),
        ] {
            assert_eq!(AUTH_BASE64.decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(
            AUTH_BASE64.decode("Zg").unwrap(),
            b"f",
            "padding is optional"
        );
        for bad in ["Z", "a*bc", "Zm9v\n"] {
            assert!(AUTH_BASE64.decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_from_cri() {
        let basic = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            Credentials::from_cri("", "", "", "", "").unwrap(),
            Credentials::None
        );
        assert_eq!(
            Credentials::from_cri("u", "p", "", "", "").unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            Credentials::from_cri("", "", "dXNlcjpwOmFzcw==", "", "").unwrap(),
            basic("user", "p:ass")
        );
        assert_eq!(
            Credentials::from_cri("u", "p", "b3RoZXI6eA==", "", "").unwrap(),
            basic("u", "p")
        );
        assert_eq!(
            Credentials::from_cri("", "", "dTpwAAA=", "", "").unwrap(),
            basic("u", "p"),
            "NULs are trimmed"
        );
        assert_eq!(
            Credentials::from_cri("u", "", "", "id", "").unwrap(),
            Credentials::IdentityToken("id".into())
        );
        assert_eq!(
            Credentials::from_cri("u", "p", "", "id", "tok").unwrap(),
            Credentials::RegistryToken("tok".into())
        );
        for bad_auth in ["not base64!", "bm9jb2xvbg==" /* "nocolon" */, "/w=="] {
            let error = Credentials::from_cri("", "", bad_auth, "", "").unwrap_err();
            assert_eq!(
                crate::error::Classify::kind(&error),
                crate::error::Kind::InvalidArgument,
                "{bad_auth}"
            );
        }
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let text = format!(
            "{:?} {:?} {:?}",
            Credentials::Basic {
                username: "alice".into(),
                password: "hunter2".into()
            },
            Credentials::IdentityToken("secret-refresh".into()),
            Credentials::RegistryToken("secret-bearer".into())
        );
        assert!(text.contains("alice"));
        assert!(
            !text.contains("hunter2") && !text.contains("secret"),
            "{text}"
        );
    }

    fn challenge(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn parses_docker_hub_challenge() {
        let value = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_www_authenticate(value),
            [challenge(
                "bearer",
                &[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:library/busybox:pull"),
                ]
            )]
        );
    }

    #[test]
    fn parses_quoting_multiple_challenges_and_junk() {
        let value = r#"Basic realm="a, \"quoted\" realm" , BEARER Realm=https://x/token, service = svc ,error="invalid_token""#;
        assert_eq!(
            parse_www_authenticate(value),
            [
                challenge("basic", &[("realm", r#"a, "quoted" realm"#)]),
                challenge(
                    "bearer",
                    &[
                        ("realm", "https://x/token"),
                        ("service", "svc"),
                        ("error", "invalid_token")
                    ]
                ),
            ]
        );
        assert_eq!(
            parse_www_authenticate("Negotiate abc=="),
            [challenge("negotiate", &[("abc", "=")])]
        );
        assert_eq!(
            parse_www_authenticate(r#"Bearer realm="unterminated"#),
            [challenge("bearer", &[("realm", "unterminated")])]
        );
        for junk in ["", " , ,", "=x", "\"", "realm=\"x\"", "é ü", "\u{0}"] {
            let _ = parse_www_authenticate(junk); // must not panic
        }
        assert_eq!(choose_scheme(&parse_www_authenticate("=x, \"y\"")), None);
    }

    #[test]
    fn prefers_bearer_with_a_usable_realm() {
        let basic = challenge("basic", &[("realm", "r")]);
        let bearer = challenge(
            "bearer",
            &[("realm", "https://auth.example/token"), ("service", "s")],
        );
        let bad_bearer = challenge("bearer", &[("realm", "file:///etc/passwd")]);
        let expected = AuthScheme::Bearer {
            realm: Url::parse("https://auth.example/token").unwrap(),
            service: "s".into(),
        };
        assert_eq!(choose_scheme(&[basic.clone(), bearer]), Some(expected));
        assert_eq!(
            choose_scheme(&[bad_bearer.clone(), basic]),
            Some(AuthScheme::Basic)
        );
        assert_eq!(choose_scheme(&[bad_bearer]), None);
        assert_eq!(choose_scheme(&[]), None);
    }

    #[tokio::test]
    async fn basic_challenges_are_learnt_per_origin() {
        let cache = Arc::new(AuthCache::default());
        let timeout = Duration::from_secs(1);
        let credentials = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let auth = Authenticator::new(cache.clone(), credentials, "app", timeout);
        let client = reqwest::Client::new();
        let origin = "http://registry.example";
        assert_eq!(auth.authorization(&client, origin).await.unwrap(), None);

        let mut challenge = HeaderMap::new();
        challenge.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"r\""),
        );
        assert!(auth.learn_challenge(origin, &challenge, None));
        let sent = auth.authorization(&client, origin).await.unwrap();
        assert_eq!(sent, Some(basic_header("u", "p")));
        assert!(
            !auth.learn_challenge(origin, &challenge, sent.as_ref()),
            "sending the refused password again is pointless"
        );
        assert_eq!(
            auth.authorization(&client, "http://other.example")
                .await
                .unwrap(),
            None
        );

        let anonymous = Authenticator::new(cache, Credentials::None, "app", timeout);
        assert_eq!(
            anonymous.authorization(&client, origin).await.unwrap(),
            None
        );
        assert!(!anonymous.learn_challenge(origin, &challenge, None));
        assert!(!anonymous.learn_challenge(origin, &HeaderMap::new(), None));
    }

    #[test]
    fn token_responses() {
        let (header, lifetime) =
            parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(header, "Bearer abc");
        assert!(header.is_sensitive());
        assert_eq!(lifetime, Duration::from_secs(300));
        let (header, lifetime) =
            parse_token_response(br#"{"token":"t","access_token":"oauth"}"#).unwrap();
        assert_eq!(
            (header.to_str().unwrap(), lifetime),
            ("Bearer oauth", DEFAULT_TOKEN_LIFETIME)
        );
        let (_, lifetime) = parse_token_response(br#"{"token":"t","expires_in":"soon"}"#).unwrap();
        assert_eq!(lifetime, DEFAULT_TOKEN_LIFETIME);
        for bad in [
            &b"not json"[..],
            br#"{"token":""}"#,
            br#"{"token":"a\nb"}"#,
            br#"{"token":5}"#,
        ] {
            assert!(parse_token_response(bad).is_err());
        }
    }

    #[test]
    fn basic_header_encodes_user_and_password() {
        assert_eq!(basic_header("user", "pass"), "Basic dXNlcjpwYXNz");
    }
}
