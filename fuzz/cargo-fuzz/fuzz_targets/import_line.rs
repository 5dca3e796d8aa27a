#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sharedcare_fuzz::import_line(data));
