//! What this machine and process let gradgym allocate: fields of /proc files and the address
//! space `RLIMIT_AS` (`ulimit -v`) leaves. The checks before a run use them, classic
//! (`config::available_memory`) and RLHF (`rlhf::memory`): past either limit an allocation in
//! gradgym's own buffers aborts the process instead of failing the run.

const GIB: f64 = (1u64 << 30) as f64;

/// The address space this process may still map under its `RLIMIT_AS` (`ulimit -v`): the
/// limit less what it has mapped already (`VmSize`, libtorch's libraries included), and how
/// that was found; `None` without a limit. Past it an allocation fails: in libtorch that is a
/// run's `out of memory` error, but in Rust's own buffers the process aborts, so the check
/// before the run must know the limit.
pub fn address_space_left() -> Option<(u128, String)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let limit = limit.rlim_cur as u128;
    let mapped = proc_bytes("/proc/self/status", "VmSize").unwrap_or(0);
    Some((
        limit.saturating_sub(mapped),
        format!(
            "RLIMIT_AS, that is ulimit -v, of {:.1} GiB less the {:.1} GiB already mapped",
            limit as f64 / GIB,
            mapped as f64 / GIB
        ),
    ))
}

/// The field `key` of a /proc file of `key:   N kB` lines (`/proc/meminfo`,
/// `/proc/self/status`), in bytes; `None` where the file or the field cannot be read.
pub fn proc_bytes(path: &str, key: &str) -> Option<u128> {
    let text = std::fs::read_to_string(path).ok()?;
    let kib: u128 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc file's `key:   N kB` field in bytes, named whole (`VmHWM`, not `VmH`).
    #[test]
    fn proc_fields_are_read_in_bytes() {
        let path = crate::scratch::Scratch::new("proc", "status");
        std::fs::write(&path, "VmPeak:\t  99 kB\nVmHWM:\t    1234 kB\n").unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(proc_bytes(p, "VmHWM"), Some(1234 * 1024));
        assert_eq!(proc_bytes(p, "VmH"), None);
        assert_eq!(proc_bytes(p, "VmSize"), None);
        std::fs::remove_file(&path).unwrap();
    }
}
