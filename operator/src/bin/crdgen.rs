//! Writes the CRDs derived from the Rust types to `crds/` and to the chart's `crds/` (or to the
//! directories given).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs = vec![
            root.join("crds"),
            root.join("charts/pg-paxos-operator/crds"),
        ];
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (file, crd) in pg_paxos_operator::crd::all() {
            let path = dir.join(file);
            std::fs::write(&path, pg_paxos_operator::crd::to_yaml(&crd))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
