//! Writes the CRDs derived from the Rust types to `crds/` (or the directory given).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds"));
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in pg_paxos_operator::crd::all() {
        let path = dir.join(file);
        std::fs::write(&path, pg_paxos_operator::crd::to_yaml(&crd))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
