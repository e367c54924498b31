//! Writing file data with runs of zeros left as holes.

use std::fs::File;
use std::io::{self};
use std::os::unix::fs::FileExt;

/// Zero runs this long, aligned in the file, are left as holes.
pub(super) const HOLE_BLOCK: usize = 4096;
pub(super) static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Writes `data`, which belongs at `offset` in `file`, skipping the blocks
/// (aligned in the file) that hold only zeros. Returns the bytes written and
/// the file offset just past the last one.
pub(super) fn write_sparse(file: &File, data: &[u8], offset: u64) -> io::Result<(u64, u64)> {
    let (mut written, mut end) = (0u64, 0u64);
    let mut run: Option<usize> = None;
    let mut position = 0;
    let mut flush = |from: usize, to: usize| -> io::Result<()> {
        file.write_all_at(&data[from..to], offset + from as u64)?;
        written += (to - from) as u64;
        end = offset + to as u64;
        Ok(())
    };
    while position < data.len() {
        let in_block = ((offset + position as u64) % HOLE_BLOCK as u64) as usize;
        let block_end = data.len().min(position + HOLE_BLOCK - in_block);
        let block = &data[position..block_end];
        let zero = block == &ZEROS[..block.len()];
        match (zero, run) {
            (true, Some(from)) => {
                flush(from, position)?;
                run = None;
            }
            (false, None) => run = Some(position),
            _ => {}
        }
        position = block_end;
    }
    if let Some(from) = run {
        flush(from, data.len())?;
    }
    Ok((written, end))
}
