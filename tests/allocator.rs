//! The C allocator's shape through the real binary (README "Fixed memory"): camjobd starts
//! itself again once with `GLIBC_TUNABLES` set (same process id, same name) and then runs
//! with one malloc arena for all its threads and its heap committed; a `GLIBC_TUNABLES` given
//! by the caller is left alone.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// glibc's heaps for threads other than the main one: each is a 64 MiB-aligned reservation, a
/// read-write part followed by the rest without access, 64 MiB in all.
fn thread_heaps(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let spans: Vec<(u64, u64, bool, bool)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (a, b) = range.split_once('-')?;
            let (a, b) = (u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?);
            Some((a, b, perms.starts_with("rw"), perms.starts_with("---")))
        })
        .collect();
    const HEAP: u64 = 64 << 20;
    spans
        .windows(2)
        .filter(|w| w[0].0 % HEAP == 0 && w[0].2 && w[1].3 && w[1].0 == w[0].1 && w[1].1 == w[0].0 + HEAP)
        .count()
}

/// KiB of the main heap (`[heap]`) resident now.
fn heap_resident_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let at = smaps.find("[heap]").expect("a [heap] mapping");
    let rss = smaps[at..].lines().find(|l| l.starts_with("Rss:")).unwrap();
    rss.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A daemon with a camera, after some requests (so the HTTP threads have allocated).
fn busy(tag: &str, env: &[(&str, &str)]) -> Daemon {
    let dir = TempDir::new(tag);
    let cfg = config(&dir, json!([synthetic("cam0", json!({}))]), json!({ "workers": 2 }));
    let d = Daemon::start_env(dir, &cfg, false, env);
    d.wait_state("cam0", "RUNNING", Duration::from_secs(10));
    for _ in 0..50 {
        assert_eq!(d.get("/api/status").status, 200);
        assert_eq!(d.get("/api/events?limit=256").status, 200);
    }
    d
}

#[test]
fn camjobd_runs_with_one_malloc_arena_under_its_own_name_and_pid() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        eprintln!("GLIBC_TUNABLES is set for the tests: camjobd takes it as given, nothing to check here");
        return;
    }
    let d = busy("alloc-one-arena", &[]);
    let pid = d.pid();
    // The restart kept the process: the child we spawned is the one serving.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "camjobd");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.split(|&b| b == 0).any(|v| v.starts_with(b"GLIBC_TUNABLES=")), "not restarted with GLIBC_TUNABLES");
    assert!(d.threads() >= 8, "threads {}", d.threads());
    assert_eq!(thread_heaps(pid), 0, "a thread has a malloc arena of its own:\n{}", d.stderr());
    let committed = camjobd::sys::HEAP_RESERVE as u64 / 1024;
    assert!(
        heap_resident_kib(pid) >= committed,
        "heap {} KiB resident, {committed} KiB committed",
        heap_resident_kib(pid)
    );
}

#[test]
fn glibc_tunables_given_by_the_caller_are_left_alone() {
    // A harmless tunable: camjobd must not restart, so glibc's default of an arena per
    // thread applies (which also shows that `thread_heaps` sees them).
    let d = busy("alloc-caller", &[("GLIBC_TUNABLES", "glibc.malloc.perturb=0")]);
    assert!(thread_heaps(d.pid()) >= 2, "expected per-thread arenas with the caller's GLIBC_TUNABLES");
}
