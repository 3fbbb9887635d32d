//! `countersign backup` and `countersign restore`: an online, consistent backup taken while
//! the server runs, and its restore, checked before anything is written.
//!
//! A backup is the ledger up to the latest signed checkpoint at the time (records written
//! after it are not in it), the images those records name, the checkpoints and witness
//! cosignatures up to it, the policy and the principal directory (keys only when asked), and
//! a manifest naming the checkpoint, written last. It is kept as an embedded data directory,
//! whatever the source backend: the embedded data directory is read from its append-only
//! files without the server's lock (only what the checkpoint covers, which is durable and
//! never rewritten); a PostgreSQL database is read in one read-only snapshot. A backup
//! restores into a data directory (`restore`), and from there into PostgreSQL with
//! `ledger copy`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::domain::ImageHash;
use crate::ledger::checkpoint;
use crate::metrics::Metrics;
use crate::storage::embedded::checkpoints::{
    COSIGNATURES_NAME, LOG_NAME, read_cosignatures, read_log,
};
use crate::storage::embedded::frame::{self, Decoded, SEGMENT_HEADER_LEN};
use crate::storage::embedded::images::ImageReader;
use crate::storage::{self, DurableState, EmbeddedSettings, StorageConfig};

/// The `format` of every manifest this code writes and reads.
pub const MANIFEST_FORMAT: &str = "countersign-backup/1";
/// The manifest's file name in a backup directory, written last.
pub const MANIFEST: &str = "manifest.json";
/// Records handed to the backup's ledger writer at once.
const BATCH: u64 = 4096;

/// What a backup holds, written last: a backup without it is incomplete.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The log's origin and the key its checkpoints verify with.
    pub origin: String,
    pub verifier_key: String,
    /// The checkpoint the backup ends at: its number, size, root (base64) and signed note.
    pub checkpoint_seq: u64,
    pub tree_size: u64,
    pub root: String,
    pub checkpoint: String,
    /// Witness cosignatures copied with the checkpoints.
    pub cosignatures: usize,
    /// Images the records name.
    pub images: usize,
    /// The configuration files copied (name to SHA-256 hex), keys among them only when asked.
    pub files: std::collections::BTreeMap<String, String>,
    pub includes_keys: bool,
}

/// Where a backup reads from.
trait Source {
    fn notes(&self) -> anyhow::Result<Vec<String>>;
    fn cosignatures(&self) -> anyhow::Result<Vec<(u64, String)>>;
    /// Calls `f` with every record below `n`, in order.
    fn each_record(
        &self,
        n: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()>;
    fn image(&self, hash: &ImageHash) -> anyhow::Result<Vec<u8>>;
}

/// A live embedded data directory, read from its files without its lock.
struct LiveDir {
    dir: PathBuf,
    images: ImageReader,
}

impl Source for LiveDir {
    fn notes(&self) -> anyhow::Result<Vec<String>> {
        // A checkpoint being appended right now shows as a torn last frame: read again.
        let path = self.dir.join("ledger").join(LOG_NAME);
        let mut last = None;
        for _ in 0..20 {
            match read_log(&path, false) {
                Ok(notes) => return Ok(notes),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(anyhow::anyhow!("read {}: {:?}", path.display(), last))
    }

    fn cosignatures(&self) -> anyhow::Result<Vec<(u64, String)>> {
        let path = self.dir.join("ledger").join(COSIGNATURES_NAME);
        let mut last = None;
        for _ in 0..20 {
            match read_cosignatures(&path, false) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(anyhow::anyhow!("read {}: {:?}", path.display(), last))
    }

    fn each_record(
        &self,
        n: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let ledger = self.dir.join("ledger");
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&ledger)
            .with_context(|| format!("list {}", ledger.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        let mut next = 0u64;
        for path in segments {
            if next >= n {
                break;
            }
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            let first = frame::parse_segment_header(&bytes)
                .with_context(|| format!("{}: bad segment header", path.display()))?;
            ensure!(
                first == next,
                "{}: starts at record {first}, not {next}",
                path.display()
            );
            let mut pos = SEGMENT_HEADER_LEN;
            while pos < bytes.len() && next < n {
                match frame::decode(&bytes[pos..], next) {
                    Decoded::Frame { payload, len, .. } => {
                        f(next, payload)?;
                        next += 1;
                        pos += len;
                    }
                    // Past the checkpoint only: what it covers was durable when it was signed.
                    _ => bail!("record {next} in {}: not whole", path.display()),
                }
            }
        }
        ensure!(
            next == n,
            "the ledger holds {next} records, the checkpoint covers {n}"
        );
        Ok(())
    }

    fn image(&self, hash: &ImageHash) -> anyhow::Result<Vec<u8>> {
        self.images
            .get(hash)
            .with_context(|| format!("read image {}", hash.to_hex()))
    }
}

/// Opens a live image log for reading; a batch being appended right now shows as a torn
/// last frame, so a failed scan is tried again.
fn read_image_log(dir: &Path) -> anyhow::Result<ImageReader> {
    let mut last = None;
    for _ in 0..20 {
        match ImageReader::open_read_only(dir) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(anyhow::anyhow!(
        "read the image log {}: {:?}",
        dir.display(),
        last
    ))
}

/// A PostgreSQL database, read in one snapshot.
struct Database(crate::storage::postgres::snapshot::Snapshot);

impl Source for Database {
    fn notes(&self) -> anyhow::Result<Vec<String>> {
        let notes = self.0.notes()?;
        for (i, (seq, _)) in notes.iter().enumerate() {
            ensure!(*seq == i as u64, "checkpoint {i} is missing");
        }
        Ok(notes.into_iter().map(|(_, n)| n).collect())
    }

    fn cosignatures(&self) -> anyhow::Result<Vec<(u64, String)>> {
        Ok(self.0.cosignatures()?)
    }

    fn each_record(
        &self,
        n: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut next = 0;
        while next < n {
            let page = self.0.records(next, BATCH.min(n - next) as usize)?;
            ensure!(
                !page.is_empty(),
                "the database holds {next} records, the checkpoint covers {n}"
            );
            for r in page {
                ensure!(r.index == next, "record {next} is missing");
                f(next, &r.record)?;
                next += 1;
            }
        }
        Ok(())
    }

    fn image(&self, hash: &ImageHash) -> anyhow::Result<Vec<u8>> {
        self.0
            .image(hash)?
            .with_context(|| format!("image {} is not stored", hash.to_hex()))
    }
}

/// Takes a backup of the store `config` names into the new directory `to`, while its server
/// runs. Blocking; call it inside a tokio runtime (image writes are awaited on it).
pub fn backup(config: &Config, to: &Path, with_keys: bool) -> anyhow::Result<Manifest> {
    ensure!(
        !to.exists() || std::fs::read_dir(to)?.next().is_none(),
        "{} is not empty: back up into a new directory",
        to.display()
    );
    let source: Box<dyn Source> = match &config.storage {
        StorageConfig::Embedded(s) => {
            ensure!(
                s.data_dir.join("ledger").is_dir(),
                "data_dir {} holds no ledger",
                s.data_dir.display()
            );
            Box::new(LiveDir {
                dir: s.data_dir.clone(),
                images: read_image_log(&s.data_dir.join("images"))?,
            })
        }
        StorageConfig::Postgres(s) => Box::new(Database(
            crate::storage::postgres::snapshot::Snapshot::open(&s.url, s.tls_ca_pem.as_deref())
                .context("open a snapshot of the database")?,
        )),
    };
    let signer = checkpoint::parse_signer(&config.engine.checkpoints.signer_key)?;
    let verifier = signer.verifier();
    let origin = &config.engine.checkpoints.origin;
    let notes = source.notes()?;
    let Some(last) = notes.last() else {
        bail!("no checkpoint has been signed yet: nothing is vouched for to back up");
    };
    let seq = notes.len() as u64 - 1;
    let cp = checkpoint::open(last, &verifier, origin)
        .context("the latest checkpoint does not verify with this configuration's key")?;
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    let data = to.join("data");
    let settings = EmbeddedSettings {
        data_dir: data.clone(),
        segment_bytes_max: 64 << 20,
        image_writes_max: 64,
        projection_cache_bytes: 16 << 20,
    };
    let metrics = Metrics::new();
    let mut dest = storage::open(&StorageConfig::Embedded(settings), &metrics)
        .context("create the backup's data directory")?;
    let runtime = tokio::runtime::Handle::try_current()
        .context("the backup runs inside a tokio runtime (it awaits image writes)")?;
    let mut images: BTreeSet<ImageHash> = BTreeSet::new();
    let mut pending = 0u64;
    let progress = crate::verify::Progress::new("backup", Some(cp.size));
    source.each_record(cp.size, &mut |index, bytes| {
        let rec = crate::ledger::record::decode_entry(bytes)
            .with_context(|| format!("decode record {index}"))?;
        // Images first: a record never names an image its store does not hold.
        for image in rec.images_added() {
            if images.insert(image.hash) && !dest.images.has(&image.hash) {
                let content = source.image(&image.hash)?;
                let stored = runtime.block_on(dest.images.put(content))?;
                ensure!(
                    stored == image.hash,
                    "image {} stored as {stored}",
                    image.hash
                );
            }
        }
        let got = dest.appender.append(bytes.to_vec());
        ensure!(got == index, "record {index} appended at {got}");
        pending += 1;
        if pending == BATCH || index + 1 == cp.size {
            dest.appender.flush()?;
            wait_durable(&runtime, &mut dest.durable, index + 1)?;
            pending = 0;
            progress.at(index + 1);
        }
        Ok(())
    })?;
    let (size, root) = dest.ledger.head();
    ensure!(
        (size, root) == (cp.size, cp.root),
        "the copied tree ({size} records) does not have the checkpoint's root"
    );
    for (i, note) in notes.iter().enumerate() {
        dest.checkpoints.append(i as u64, note)?;
    }
    let cosignatures: Vec<(u64, String)> = source
        .cosignatures()?
        .into_iter()
        .filter(|(s, _)| *s <= seq)
        .collect();
    dest.checkpoints.cosignatures()?;
    for (s, line) in &cosignatures {
        dest.checkpoints.add_cosignature(*s, line)?;
    }
    dest.projection.flush()?;
    drop(dest);
    // The configuration a restore needs, and keys only when asked.
    let mut files = std::collections::BTreeMap::new();
    let config_files = std::fs::create_dir_all(to.join("config"));
    config_files.with_context(|| format!("create {}", to.join("config").display()))?;
    let mut copy = |from: &Path, name: &str| -> anyhow::Result<()> {
        let bytes = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
        write_synced(&to.join("config").join(name), &bytes)?;
        files.insert(name.to_owned(), hex::encode(Sha256::digest(&bytes)));
        Ok(())
    };
    copy(&config.policy_path, "policy.toml")?;
    copy(&config.directory_path, "principals.toml")?;
    if with_keys {
        // The key the configuration names (ledger.signing_key), as the server reads it.
        let key = format!("{}\n", config.engine.checkpoints.signer_key);
        write_synced(&to.join("config").join("ledger.key"), key.as_bytes())?;
        files.insert(
            "ledger.key".into(),
            hex::encode(Sha256::digest(key.as_bytes())),
        );
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        origin: origin.clone(),
        verifier_key: verifier.to_text(),
        checkpoint_seq: seq,
        tree_size: cp.size,
        root: B64.encode(cp.root),
        checkpoint: last.clone(),
        cosignatures: cosignatures.len(),
        images: images.len(),
        files,
        includes_keys: with_keys,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    write_synced(&to.join(MANIFEST), &json)?;
    sync_dir(to)?;
    Ok(manifest)
}

/// Checks the backup in `from` (its manifest, every record, checkpoint, cosignature and image,
/// and the copied files' hashes) and only then copies its data directory to `data`, which
/// must not exist or be empty. `pubkey`, when given, is the key the auditor pinned: the
/// backup's checkpoints must verify with it, not only with the key the manifest names.
pub fn restore(
    from: &Path,
    data: &Path,
    pubkey: Option<&checkpoint::Verifier>,
) -> anyhow::Result<Manifest> {
    let manifest_path = from.join(MANIFEST);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).with_context(|| {
            format!(
                "read {} (a backup without it is incomplete)",
                manifest_path.display()
            )
        })?)
        .context("the manifest is not a backup manifest")?;
    ensure!(
        manifest.format == MANIFEST_FORMAT,
        "unknown backup format {:?}",
        manifest.format
    );
    let named = checkpoint::parse_verifier(&manifest.verifier_key)?;
    if let Some(k) = pubkey {
        ensure!(
            *k == named,
            "the backup's checkpoints are signed by another key than --pubkey"
        );
    }
    let cp = checkpoint::open(&manifest.checkpoint, &named, &manifest.origin)
        .context("the manifest's checkpoint does not verify")?;
    ensure!(
        cp.size == manifest.tree_size && B64.encode(cp.root) == manifest.root,
        "the manifest's checkpoint and its size or root disagree"
    );
    let report = crate::verify::verify_data_dir(&from.join("data"), Some(&named));
    if let Some(p) = report.problem {
        bail!("the backup does not verify: {p}");
    }
    ensure!(
        report.records == manifest.tree_size && report.root == cp.root,
        "the backup holds {} records, its manifest says {}",
        report.records,
        manifest.tree_size
    );
    for (name, sha) in &manifest.files {
        let bytes = std::fs::read(from.join("config").join(name))
            .with_context(|| format!("read config/{name}"))?;
        ensure!(
            hex::encode(Sha256::digest(&bytes)) == *sha,
            "config/{name} was changed after the backup"
        );
    }
    ensure!(
        !data.exists() || std::fs::read_dir(data)?.next().is_none(),
        "{} is not empty: restore into a new data directory",
        data.display()
    );
    copy_tree(&from.join("data"), data)?;
    Ok(manifest)
}

/// Copies a directory tree, each file fsynced, each directory fsynced after its entries.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("list {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copy {}", src.display()))?;
            std::fs::File::open(&dst)?.sync_all()?;
        }
    }
    sync_dir(to)
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))
}

fn wait_durable(
    runtime: &tokio::runtime::Handle,
    durable: &mut storage::Durable,
    count: u64,
) -> anyhow::Result<()> {
    loop {
        match &*durable.borrow_and_update() {
            DurableState::Count(n) if *n >= count => return Ok(()),
            DurableState::Count(_) => {}
            DurableState::Failed { count: n, error } => {
                bail!("the backup stopped writing at record {n}: {error}")
            }
        }
        runtime
            .block_on(durable.changed())
            .context("the backup's ledger writer stopped")?;
    }
}
