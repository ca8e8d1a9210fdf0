//! Replays the fuzz seed corpus (`fuzz/seeds/<target>/`) and every input a fuzzer ever crashed
//! on (`fuzz/regressions/<target>/`) through the same checks the fuzz targets run, so a fixed
//! crash stays fixed without libFuzzer. `scripts/fuzz.sh` runs the fuzzers themselves.

#[path = "../support/fuzz_checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [root.join("seeds").join(target), root.join("regressions").join(target)] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{} fails its check", entry.path().display());
            n += 1;
        }
    }
    n
}

#[test]
fn http_request_inputs() {
    assert!(replay("http_request", checks::http_request) >= 5, "the seed corpus is missing");
}

#[test]
fn config_inputs() {
    assert!(replay("config", checks::config) >= 5, "the seed corpus is missing");
}

#[test]
fn mjpeg_inputs() {
    assert!(replay("mjpeg", checks::mjpeg) >= 3, "the seed corpus is missing");
}

#[test]
fn rtsp_request_inputs() {
    assert!(replay("rtsp_request", checks::rtsp_request) >= 5, "the seed corpus is missing");
}

#[test]
fn whep_inputs() {
    assert!(replay("whep", checks::whep) >= 5, "the seed corpus is missing");
}
