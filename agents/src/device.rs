//! Devices by name.

use tch::Device;

static ELSEWHERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, configs are checked for other machines (a Slurm script's nodes): a CUDA device
/// is taken as there, whatever this machine has, and this machine's memory bounds no run. For a process that writes such a script and
/// runs nothing.
pub fn check_for_other_machines() {
    ELSEWHERE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether configs are checked for other machines ([`check_for_other_machines`]): then
/// neither this machine's GPUs nor its memory bound them.
pub fn checking_for_other_machines() -> bool {
    ELSEWHERE.load(std::sync::atomic::Ordering::Relaxed)
}

/// `cpu`, `cuda` (GPU 0) or `cuda:N`. CUDA must be available (unless configs are checked for
/// other machines, [`check_for_other_machines`]).
pub fn parse_device(name: &str) -> Result<Device, String> {
    let device = parse_device_name(name)?;
    if checking_for_other_machines() {
        return Ok(device);
    }
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count() as usize;
        if count == 0 {
            return Err(format!(
                "device `{name}` asked for, but libtorch sees no CUDA device"
            ));
        }
        if n >= count {
            return Err(format!(
                "device `{name}` asked for, but libtorch sees {count} CUDA device(s)"
            ));
        }
    }
    Ok(device)
}

/// `cpu`, `cuda` (GPU 0) or `cuda:N` by its name alone, whether or not this machine has it.
fn parse_device_name(name: &str) -> Result<Device, String> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::Cuda(n),
            None => {
                return Err(format!(
                    "unknown device `{other}` (expected cpu, cuda or cuda:N)"
                ));
            }
        },
    })
}
