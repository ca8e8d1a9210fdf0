//! libFuzzer target; the property checked is `tests/support/fuzz_checks.rs::whep`.
//!
//! libFuzzer's panic hook aborts on every panic, caught or not. camjobd catches str0m's own
//! assertions on the `webrtc` thread (a panic inside str0m on one offer or session refuses or
//! ends that one, and the check asserts the thread lives on), so those are let through here;
//! a panic anywhere else, camjobd's own on that thread included, still aborts.
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(
    init: {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_str0m = info.location().is_some_and(|l| l.file().contains("/str0m-"));
            if in_str0m && std::thread::current().name() == Some("webrtc") {
                eprintln!("str0m panicked on the webrtc thread (camjobd catches it): {info}");
                return;
            }
            abort(info)
        }));
    },
    |data: &[u8]| checks::whep(data)
);
