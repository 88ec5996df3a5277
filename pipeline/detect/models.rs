//! The anomaly models a detector scores windows with: per application type, the model
//! announced on the compacted `<prefix>.models` topic, else the newest one shipped in
//! `models/<app-type>/`.
//!
//! In: the model table (one [`ModelAnnouncement`] per application type, key the app
//! type) and the shipped models. Out: a [`ModelSet`], per application type one
//! [`AnomalyModel`] checked against the detector's windows. Guarantees: an announced
//! model is loaded and checked before it replaces anything — its weights must have
//! the announced SHA-256, its metadata the announced app type and version, and it must
//! expect the detector's window (features, points, step); a model that fails any of
//! these is refused with the reason, logged as an error, and the model that served
//! keeps serving. A promoted model scores the windows that end at or after its
//! announced `effective_from_ms` (event time), earlier windows keep the model before
//! it: which model judges a window depends on the window alone, not on when a replica
//! read the announcement, so replicas and replays after a crash agree. The trainer sets
//! that time past the newest telemetry, so running detectors read the announcement
//! before their windows get there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::codec::ModelAnnouncement;
use crate::detect::lstm::{artifact, AnomalyModel, ModelError};
use crate::kafka::table::{Entry, Table};
use crate::window::WindowConfig;

/// The model topic, loaded and followed.
pub type ModelTable = Table<ModelAnnouncement>;

impl Entry for ModelAnnouncement {
    const NAME: &'static str = "model";

    fn key(&self) -> String {
        self.app_type.clone()
    }

    fn check(&self) -> Result<(), String> {
        if self.app_type.is_empty() || self.version.is_empty() || self.uri.is_empty() {
            return Err("app_type, version and uri must not be empty".to_owned());
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("sha256 {:?} is not 64 hexadecimal digits", self.sha256));
        }
        Ok(())
    }
}

/// Why an announced model was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefusedModel {
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error("{path}: SHA-256 is {found}, the announcement says {announced}")]
    Digest { path: PathBuf, found: String, announced: String },
    #[error("{path}: holds {found}, the announcement says {announced}")]
    Identity { path: PathBuf, found: String, announced: String },
}

impl From<ModelError> for RefusedModel {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

/// Models kept per application type: the newest and those it replaced, for windows
/// that end before the newer ones took effect (a replay's, a lagging partition's).
const KEPT_PER_APP: usize = 3;

/// The models in use, by application type: each a schedule of models by the event
/// time they score from, oldest first.
#[derive(Debug, Clone, Default)]
pub struct ModelSet {
    by_app: BTreeMap<String, Vec<(i64, Arc<AnomalyModel>)>>,
}

impl ModelSet {
    /// The newest model of `app_type`: the one for windows from now on.
    pub fn get(&self, app_type: &str) -> Option<&Arc<AnomalyModel>> {
        self.by_app.get(app_type).and_then(|s| s.last()).map(|(_, m)| m)
    }

    /// The model that scores a window of `app_type` ending at `end_ms`: the newest
    /// one in effect by then, else the oldest kept.
    pub fn at(&self, app_type: &str, end_ms: i64) -> Option<&Arc<AnomalyModel>> {
        let schedule = self.by_app.get(app_type)?;
        schedule.iter().rev().find(|(from, _)| *from <= end_ms).or(schedule.first()).map(|(_, m)| m)
    }

    /// Adds `model` for windows of its app type from `from_ms` on; a model that
    /// took effect later is dropped (a re-announcement replaces it).
    fn promote(&mut self, app_type: &str, from_ms: i64, model: Arc<AnomalyModel>) {
        let schedule = self.by_app.entry(app_type.to_owned()).or_default();
        schedule.retain(|(from, _)| *from < from_ms);
        schedule.push((from_ms, model));
        let excess = schedule.len().saturating_sub(KEPT_PER_APP);
        schedule.drain(..excess);
    }

    /// The earliest effective time of a model this set has that `before` had not, as
    /// (`app_type/version`, effective time).
    pub fn earliest_new(&self, before: &ModelSet) -> Option<(String, i64)> {
        self.by_app
            .iter()
            .flat_map(|(app, schedule)| {
                let had = before.by_app.get(app).map_or(&[][..], |s| s.as_slice());
                schedule
                    .iter()
                    .filter(move |(from, m)| !had.iter().any(|(f, h)| f == from && Arc::ptr_eq(h, m)))
                    .map(move |(from, m)| (format!("{app}/{}", m.metadata().version), *from))
            })
            .min_by_key(|(_, from)| *from)
    }

    /// `app_type/version` of every model, for logs.
    pub fn versions(&self) -> Vec<String> {
        self.app_versions().into_iter().map(|(app, v)| format!("{app}/{v}")).collect()
    }

    /// (app type, version) of the newest model of every app type.
    pub fn app_versions(&self) -> Vec<(String, String)> {
        self.by_app.keys().filter_map(|app| Some((app.clone(), self.get(app)?.metadata().version.clone()))).collect()
    }

    pub fn len(&self) -> usize {
        self.by_app.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_app.is_empty()
    }

    /// The newest shipped model of every application type under `root`
    /// (`root/<app-type>/<version>/`) that fits `window`; the others are skipped with a
    /// warning (a folder without models, such as `signatures/`, silently).
    pub fn shipped(root: &Path, window: &WindowConfig) -> Self {
        let mut by_app = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(root) else {
            tracing::warn!(root = %root.display(), "no shipped models: the folder cannot be read");
            return Self { by_app };
        };
        let mut apps: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        apps.sort();
        for app in apps {
            let Ok(dir) = artifact::latest_version(root, &app) else { continue };
            match AnomalyModel::load(&dir).and_then(|m| fits(m, window)) {
                Ok(m) => {
                    by_app.insert(app, vec![(i64::MIN, Arc::new(m))]);
                }
                Err(error) => tracing::warn!(%error, app_type = %app, "shipped model not used"),
            }
        }
        Self { by_app }
    }
}

fn fits(model: AnomalyModel, window: &WindowConfig) -> Result<AnomalyModel, ModelError> {
    model.check_window(&window.features, window.points, window.step_ms)?;
    Ok(model)
}

/// The hex SHA-256 of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads and checks the model an announcement points at; see the module documentation.
pub fn load_announced(a: &ModelAnnouncement, window: &WindowConfig) -> Result<AnomalyModel, RefusedModel> {
    let dir = Path::new(&a.uri);
    let weights_path = dir.join(artifact::WEIGHTS_FILE);
    let meta_path = dir.join(artifact::METADATA_FILE);
    let read = |path: &Path| std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_owned(), source });
    let weights = read(&weights_path)?;
    let found = sha256_hex(&weights);
    if !found.eq_ignore_ascii_case(&a.sha256) {
        return Err(RefusedModel::Digest { path: weights_path, found, announced: a.sha256.clone() });
    }
    let model = AnomalyModel::from_bytes(&read(&meta_path)?, &weights, &a.uri)?;
    let m = model.metadata();
    if m.app_type != a.app_type || m.version != a.version {
        return Err(RefusedModel::Identity {
            path: meta_path,
            found: format!("{}/{}", m.app_type, m.version),
            announced: format!("{}/{}", a.app_type, a.version),
        });
    }
    Ok(fits(model, window)?)
}

/// The model set as the engine sees it: shipped models overridden by announced ones,
/// rebuilt when the model table changes.
pub struct Models {
    table: Option<ModelTable>,
    window: WindowConfig,
    /// The table version the set was built from, and the set.
    current: Mutex<(u64, Arc<ModelSet>)>,
}

impl Models {
    /// Starts from `base` (the shipped models), applies the table's announcements.
    pub fn new(table: Option<ModelTable>, window: WindowConfig, base: ModelSet) -> Self {
        let models = Self { table, window, current: Mutex::new((u64::MAX, Arc::new(base))) };
        models.set();
        models
    }

    /// Changes whenever the model table does.
    pub fn version(&self) -> u64 {
        self.table.as_ref().map_or(0, |t| t.version())
    }

    /// The models to score with now: announcements that changed since the last call
    /// are loaded here (on the caller's thread: a blocking one), refused ones leave
    /// the serving model in place.
    pub fn set(&self) -> Arc<ModelSet> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(table) = &self.table else { return current.1.clone() };
        let snapshot = table.current();
        if snapshot.version == current.0 {
            return current.1.clone();
        }
        let mut next = (*current.1).clone();
        for (app, a) in snapshot.entries.iter() {
            if next.get(app).is_some_and(|m| m.metadata().version == a.version) {
                continue;
            }
            match load_announced(a, &self.window) {
                Ok(m) => {
                    tracing::info!(
                        app_type = %app,
                        version = %a.version,
                        uri = %a.uri,
                        effective_from_ms = a.effective_from_ms,
                        "model promoted; windows ending from its effective time on are scored with it"
                    );
                    next.promote(app, a.effective_from_ms, Arc::new(m));
                }
                Err(error) => tracing::error!(
                    %error,
                    app_type = %app,
                    version = %a.version,
                    serving = next.get(app).map(|m| m.metadata().version.clone()).unwrap_or_default(),
                    "announced model refused; the serving model stays"
                ),
            }
        }
        *current = (snapshot.version, Arc::new(next));
        current.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::detect::lstm::shipped_dir;
    use crate::kafka::{Cluster, KafkaConfig, Publisher};

    /// A copy of the shipped web model as version `version` in `dir`.
    fn copy_web_model(dir: &Path, version: &str) -> Vec<u8> {
        let from = artifact::latest_version(&shipped_dir(), "web").unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let weights = std::fs::read(from.join(artifact::WEIGHTS_FILE)).unwrap();
        std::fs::write(dir.join(artifact::WEIGHTS_FILE), &weights).unwrap();
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(from.join(artifact::METADATA_FILE)).unwrap()).unwrap();
        meta["version"] = version.into();
        std::fs::write(dir.join(artifact::METADATA_FILE), serde_json::to_vec(&meta).unwrap()).unwrap();
        weights
    }

    fn announcement(dir: &Path, version: &str, sha256: String) -> ModelAnnouncement {
        ModelAnnouncement {
            app_type: "web".into(),
            version: version.into(),
            uri: dir.to_string_lossy().into_owned(),
            sha256,
            features: WindowConfig::default().features,
            trained_from_ms: 0,
            trained_to_ms: 1,
            validation: BTreeMap::new(),
            created_ms: 1,
            effective_from_ms: 0,
        }
    }

    async fn announce_and_wait(cluster: &Cluster, models: &Models, a: &ModelAnnouncement) {
        let before = models.version();
        let topic = cluster.topic::<ModelAnnouncement>();
        let mut p = Publisher::<ModelAnnouncement>::new(&cluster.producer_config(), topic).unwrap();
        p.publish(&a.app_type, a, 1).await.unwrap();
        p.flush(Duration::from_secs(10)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while models.version() == before {
            assert!(Instant::now() < deadline, "the model table did not see version {}", a.version);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_promoted_model_scores_windows_from_its_effective_time_and_earlier_ones_keep_the_model_before() {
        let window = WindowConfig::default();
        let mut set = ModelSet::shipped(&shipped_dir(), &window);
        let shipped = set.get("web").expect("a shipped web model").metadata().version.clone();
        let tmp = tempfile::tempdir().unwrap();
        let model = |version: &str| {
            let dir = tmp.path().join(version);
            copy_web_model(&dir, version);
            Arc::new(AnomalyModel::load(&dir).unwrap())
        };
        let at = |set: &ModelSet, end_ms: i64| set.at("web", end_ms).unwrap().metadata().version.clone();

        let before = set.clone();
        assert_eq!(set.earliest_new(&before), None);
        set.promote("web", 1_000, model("a"));
        assert_eq!(set.earliest_new(&before), Some(("web/a".to_owned(), 1_000)));
        assert_eq!((at(&set, 999), at(&set, 1_000)), (shipped.clone(), "a".to_owned()));
        assert_eq!(set.get("web").unwrap().metadata().version, "a", "the newest serves new windows");
        set.promote("web", 2_000, model("b"));
        assert_eq!([at(&set, 0), at(&set, 1_999), at(&set, 2_000)], [shipped.as_str(), "a", "b"]);
        assert!(set.app_versions().contains(&("web".to_owned(), "b".to_owned())), "{:?}", set.app_versions());

        // A re-announcement effective earlier replaces what would have taken effect later.
        set.promote("web", 1_500, model("c"));
        assert_eq!([at(&set, 1_499), at(&set, 1_500), at(&set, 9_000)], ["a", "c", "c"]);

        // Bounded: the oldest kept model judges windows older than every kept one.
        set.promote("web", 3_000, model("d"));
        set.promote("web", 4_000, model("e"));
        assert_eq!([at(&set, 0), at(&set, 3_500), at(&set, 4_000)], ["c", "d", "e"]);
        assert!(set.at("cache", 0).is_some() && set.at("no-such-app", 0).is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn announced_models_swap_in_and_broken_ones_leave_the_serving_model() {
        let cluster = Cluster::open(&KafkaConfig::default()).unwrap();
        let window = WindowConfig::default();
        let shipped = ModelSet::shipped(&shipped_dir(), &window);
        let shipped_version = shipped.get("web").expect("a shipped web model").metadata().version.clone();
        let table = ModelTable::follow(&cluster, CancellationToken::new()).await.unwrap();
        let models = Models::new(Some(table), window.clone(), shipped);
        let serving = |m: &Models| m.set().get("web").unwrap().metadata().version.clone();
        assert_eq!(serving(&models), shipped_version);

        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good");
        let weights = copy_web_model(&good, "good");
        announce_and_wait(&cluster, &models, &announcement(&good, "good", sha256_hex(&weights))).await;
        assert_eq!(serving(&models), "good", "a valid announcement is served");

        // Weights that are not what the announcement says.
        let other = tmp.path().join("tampered");
        copy_web_model(&other, "tampered");
        let a = announcement(&other, "tampered", sha256_hex(b"something else"));
        let refused = load_announced(&a, &window).unwrap_err().to_string();
        assert!(refused.contains("SHA-256") && refused.contains("model.safetensors"), "{refused}");
        announce_and_wait(&cluster, &models, &a).await;
        assert_eq!(serving(&models), "good", "a refused model leaves the serving one");

        // Corrupt weights whose digest matches: the loader refuses them.
        let corrupt = tmp.path().join("corrupt");
        let bytes = copy_web_model(&corrupt, "corrupt");
        let cut = &bytes[..bytes.len() / 2];
        std::fs::write(corrupt.join(artifact::WEIGHTS_FILE), cut).unwrap();
        let a = announcement(&corrupt, "corrupt", sha256_hex(cut));
        let refused = load_announced(&a, &window).unwrap_err().to_string();
        assert!(refused.contains("model.safetensors"), "{refused}");
        announce_and_wait(&cluster, &models, &a).await;
        assert_eq!(serving(&models), "good");

        // A model for other windows.
        let narrow = WindowConfig { points: 32, ..WindowConfig::default() };
        let a = announcement(&good, "good", sha256_hex(&weights));
        assert!(load_announced(&a, &narrow).unwrap_err().to_string().contains("32 points"));
    }
}
