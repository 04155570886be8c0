//! include/shrink.h is what cbindgen makes of this crate: a function added or changed without refreshing the header
//! fails here. Refresh it with
//!     SHRINK_BLESS=1 cargo test --release -p shrink-capi --test header

use std::path::Path;

#[test]
fn the_committed_header_is_up_to_date() {
    let krate = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(krate.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new().with_config(config).with_src(krate.join("src/lib.rs")).generate().unwrap();
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let header = krate.join("../../include/shrink.h");
    if std::env::var_os("SHRINK_BLESS").is_some() {
        std::fs::write(&header, &fresh).unwrap();
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/shrink.h differs from what cbindgen generates: run `SHRINK_BLESS=1 cargo test --release -p shrink-capi --test header` to refresh it"
    );
}
