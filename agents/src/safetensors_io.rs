//! Float32 safetensors files, written and read the one way every gradgym checkpoint is: the
//! actor-critic's `policy.safetensors` ([`crate::checkpoint`]) and the transformer's
//! `model.safetensors` ([`crate::nn::gpt`]). A leaf module, so that both can use it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, ensure};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::run_folder::write_atomic;

/// Writes float32 tensors `(name, shape, values)` as a safetensors file at `path` (atomically),
/// with `{"format": format}` as its metadata. Every gradgym checkpoint is written by this.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    format: &str,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow::anyhow!("tensor {n}: {e:?}"))
        })
        .collect::<Result<_>>()?;
    let metadata: HashMap<String, String> =
        HashMap::from([("format".to_string(), format.to_string())]);
    let data = safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| anyhow::anyhow!("cannot serialise the weights: {e:?}"))?;
    write_atomic(path, &data)
}

/// The float32 tensor `name` of `file` (read from `path`), checked to have `shape` and only
/// finite values; the error names the file and the tensor.
pub fn read_f32_tensor(
    file: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<Vec<f32>> {
    let view = file
        .tensor(name)
        .map_err(|_| anyhow::anyhow!("{}: tensor `{name}` is missing", path.display()))?;
    ensure!(
        view.dtype() == Dtype::F32 && view.shape() == shape,
        "{}: tensor `{name}` is {:?} {:?}, the config needs F32 {shape:?}",
        path.display(),
        view.dtype(),
        view.shape()
    );
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    ensure!(
        values.iter().all(|v| v.is_finite()),
        "{}: tensor `{name}` holds a value that is not finite",
        path.display()
    );
    Ok(values)
}
