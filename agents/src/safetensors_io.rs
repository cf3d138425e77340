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

/// `data`, the bytes of the safetensors file `path`, parsed; what is wrong with a file that
/// does not parse is said in words (a file cut short, a header that is not JSON, offsets that
/// do not cover the data, a tensor of a type this reader does not know, by name).
pub fn parse_safetensors<'a>(data: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    use safetensors::SafeTensorError as E;
    SafeTensors::deserialize(data).map_err(|e| {
        let what = match e {
            E::HeaderTooSmall => format!(
                "{} bytes, fewer than the 8 of a safetensors file's header length (empty or cut short?)",
                data.len()
            ),
            E::InvalidHeaderLength => {
                "its header length runs past the end of the file (cut short?)".to_string()
            }
            E::HeaderTooLarge => "its header length is over 100 MB (not a safetensors file?)".into(),
            E::InvalidHeader | E::InvalidHeaderStart => {
                "its header is not a JSON object (not a safetensors file?)".to_string()
            }
            E::InvalidHeaderDeserialization => match (header_json(data), unknown_dtype(data)) {
                (_, Some((name, dtype))) => format!(
                    "tensor `{name}` has dtype {dtype}, which gradgym's reader does not know (it reads F32)"
                ),
                (None, _) => "its header is not valid JSON (not a safetensors file?)".into(),
                (Some(_), None) => "its header is JSON but not a safetensors header (a field missing or of the wrong type)".into(),
            },
            E::MetadataIncompleteBuffer => {
                "its tensors' data does not end where the file ends (cut short, or data appended?)".into()
            }
            E::InvalidOffset(name) => format!(
                "tensor `{name}`'s offsets in the header leave a gap or an overlap in the data"
            ),
            E::TensorInvalidInfo | E::ValidationOverflow => {
                "a tensor's shape, dtype and offsets in the header disagree".into()
            }
            other => format!("{other:?}"),
        };
        anyhow::anyhow!("{}: not a readable safetensors file: {what}", path.display())
    })
}

/// A safetensors file's header, where it is JSON.
fn header_json(data: &[u8]) -> Option<serde_json::Value> {
    let n = u64::from_le_bytes(data.get(..8)?.try_into().ok()?) as usize;
    serde_json::from_slice(data.get(8..8usize.checked_add(n)?)?).ok()
}

/// The first tensor of a safetensors header whose `dtype` is none the reader knows.
fn unknown_dtype(data: &[u8]) -> Option<(String, String)> {
    const KNOWN: [&str; 13] = [
        "BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
    ];
    header_json(data)?
        .as_object()?
        .iter()
        .find_map(|(name, t)| {
            let dtype = t.get("dtype")?.as_str()?;
            (name != "__metadata__" && !KNOWN.contains(&dtype))
                .then(|| (name.clone(), dtype.to_string()))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of two float32 tensors, as gradgym writes them.
    fn file() -> Vec<u8> {
        let a = [1f32, 2.0, 3.0, 4.0];
        let b = [5f32, 6.0];
        let (ba, bb): (Vec<u8>, Vec<u8>) = (
            a.iter().flat_map(|x| x.to_le_bytes()).collect(),
            b.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
        let views = vec![
            ("a", TensorView::new(Dtype::F32, vec![2, 2], &ba).unwrap()),
            ("b", TensorView::new(Dtype::F32, vec![2], &bb).unwrap()),
        ];
        safetensors::tensor::serialize(views, &None).unwrap()
    }

    fn error(data: &[u8]) -> String {
        match parse_safetensors(data, Path::new("m.safetensors")) {
            Ok(_) => panic!("parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn what_is_wrong_with_a_file_that_does_not_parse_is_said_in_words() {
        let good = file();
        assert!(parse_safetensors(&good, Path::new("m.safetensors")).is_ok());
        let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "0 bytes, fewer than the 8"),
            (
                good[..8 + header / 2].to_vec(),
                "header length runs past the end",
            ),
            (
                good[..good.len() - 4].to_vec(),
                "does not end where the file ends",
            ),
            (
                [good.clone(), vec![0; 4]].concat(),
                "does not end where the file ends",
            ),
            (
                {
                    let mut d = good.clone();
                    d[8] = b'[';
                    d
                },
                "header is not a JSON object",
            ),
            (
                {
                    let mut d = good.clone();
                    d[9] = b'#';
                    d
                },
                "header is not valid JSON",
            ),
            (
                // A complex tensor (Python's safetensors reads C64): named, with its type.
                {
                    let text = std::str::from_utf8(&good[8..8 + header])
                        .unwrap()
                        .replace("\"b\":{\"dtype\":\"F32\"", "\"b\":{\"dtype\":\"C64\"");
                    assert!(text.contains("C64"), "{text}");
                    let mut d = (text.len() as u64).to_le_bytes().to_vec();
                    d.extend_from_slice(text.as_bytes());
                    d.extend_from_slice(&good[8 + header..]);
                    d
                },
                "tensor `b` has dtype C64",
            ),
        ];
        for (data, want) in cases {
            let e = error(&data);
            assert!(
                e.starts_with("m.safetensors: not a readable safetensors file: ")
                    && e.contains(want),
                "{want}: {e}"
            );
        }
    }
}
