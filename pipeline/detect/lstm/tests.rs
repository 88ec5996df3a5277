//! Golden values, the fused path against candle, save/load and refusals.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::artifact::{self, FORMAT};
use super::*;

fn t(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).expect("tensor")
}

/// Input 2, hidden 1: every gate has its own weights and both biases are non-zero, so
/// that a different gate order or a dropped bias changes every output.
fn tiny() -> (Config, HashMap<String, Tensor>) {
    let config = Config { input: 2, hidden: 1, layers: 1, score_steps: 1 };
    let mut m = HashMap::new();
    // Rows in PyTorch's order: input, forget, cell, output.
    m.insert("lstm.weight_ih_l0".to_owned(), t(&[0.5, -0.3, 0.8, 0.1, -0.6, 0.9, 0.2, 0.7], &[4, 2]));
    m.insert("lstm.weight_hh_l0".to_owned(), t(&[0.4, -0.5, 0.3, 0.9], &[4, 1]));
    m.insert("lstm.bias_ih_l0".to_owned(), t(&[0.1, 0.2, -0.1, 0.05], &[4]));
    m.insert("lstm.bias_hh_l0".to_owned(), t(&[-0.2, 0.3, 0.15, 0.0], &[4]));
    m.insert("head.weight".to_owned(), t(&[1.5, -0.7], &[2, 1]));
    m.insert("head.bias".to_owned(), t(&[0.05, -0.1], &[2]));
    (config, m)
}

const TINY_X: [f32; 6] = [1.0, -1.0, 0.5, 2.0, -1.5, 0.25];

/// Worked by hand from PyTorch's LSTM equations (i = σ(W_ii x + b_ii + W_hi h + b_hi),
/// f, g = tanh(…), o likewise; c' = f c + i g; h' = o tanh c'), in f64, then the head.
const TINY_FORECASTS: [f64; 6] = [
    -0.263_031_422_489_084_23,
    0.046_081_330_494_905_95,
    -0.100_414_260_085_958_93,
    -0.029_806_678_626_552_507,
    0.173_192_132_115_313_37,
    -0.157_489_661_653_812_9,
];

fn candle_forecasts(
    config: Config,
    tensors: &HashMap<String, Tensor>,
    x: &[f32],
    batch: usize,
    points: usize,
) -> Vec<f32> {
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let model = Forecaster::new(config, vb).expect("model");
    let x = Tensor::from_vec(x.to_vec(), (batch, points, config.input), &Device::Cpu).expect("x");
    model.forward(&x).expect("forward").flatten_all().expect("flat").to_vec1::<f32>().expect("vec")
}

fn fused(config: Config, tensors: &HashMap<String, Tensor>) -> fast::Fused {
    fast::Fused::new(config, |n| tensors.get(n).cloned().ok_or_else(|| candle_core::Error::Msg(n.to_owned())))
        .expect("fused")
}

#[test]
fn candle_model_gives_the_hand_computed_forecasts() {
    let (config, tensors) = tiny();
    let got = candle_forecasts(config, &tensors, &TINY_X, 1, 3);
    for (g, want) in got.iter().zip(TINY_FORECASTS) {
        assert!((f64::from(*g) - want).abs() < 1e-6, "candle {got:?} vs {TINY_FORECASTS:?}");
    }
}

#[test]
fn fused_path_gives_the_hand_computed_forecasts() {
    let (config, tensors) = tiny();
    let mut out = vec![0f32; 6];
    fused(config, &tensors).forecast(&TINY_X, 3, &mut out);
    for (g, want) in out.iter().zip(TINY_FORECASTS) {
        assert!((f64::from(*g) - want).abs() < 1e-6, "fused {out:?} vs {TINY_FORECASTS:?}");
    }
}

fn random_tensors(config: Config, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = 1.0 / (config.hidden as f32).sqrt();
    config
        .tensors()
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-k..k)).collect();
            (name, t(&v, &shape))
        })
        .collect()
}

#[test]
fn fused_path_matches_candle_at_the_default_and_odd_shapes() {
    // The default shape; two layers; a hidden width that leaves a remainder after the
    // kernels' chunks of gate units.
    for (input, hidden, layers) in [(8, 32, 1), (8, 32, 2), (3, 20, 2)] {
        let config = Config { input, hidden, layers, score_steps: 8 };
        let tensors = random_tensors(config, 7 + hidden as u64);
        let (batch, points) = (5, 64);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f32> = (0..batch * points * input).map(|_| rng.random_range(-3.0..3.0)).collect();
        let want = candle_forecasts(config, &tensors, &x, batch, points);
        let mut got = vec![0f32; want.len()];
        fused(config, &tensors).forecast(&x, points, &mut got);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{input}x{hidden}x{layers}: fused differs from candle by {worst}");
    }
}

#[test]
fn batched_forecasts_equal_each_window_forecast_alone() {
    // Batch sizes below, at and past a tile, one layer and two.
    for layers in [1, 2] {
        let config = Config { input: 8, hidden: 32, layers, score_steps: 8 };
        let model = fused(config, &random_tensors(config, 21 + layers as u64));
        let points = 64;
        let row = points * config.input;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x: Vec<f32> = (0..257 * row).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut alone = vec![0f32; x.len()];
        for (xw, ow) in x.chunks_exact(row).zip(alone.chunks_exact_mut(row)) {
            model.forecast(xw, points, ow);
        }
        for batch in [1, 3, 64, 257] {
            let mut got = vec![0f32; batch * row];
            model.forecast(&x[..batch * row], points, &mut got);
            for (w, (g, a)) in got.chunks_exact(row).zip(alone.chunks_exact(row)).enumerate() {
                assert_eq!(g, a, "{layers} layer(s), batch {batch}: window {w} differs from its forecast alone");
            }
        }
    }
}

#[test]
fn fast_exp_is_accurate_over_the_range_the_gates_use() {
    let mut x = -80.0f32;
    while x < 80.0 {
        let (got, want) = (fast::exp(x), x.exp());
        assert!(((got - want) / want).abs() < 1e-6, "exp({x}) = {got}, want {want}");
        x += 0.137;
    }
    // Out of range inputs are clamped to the ends, where the result is still a normal float.
    assert_eq!(fast::exp(-1000.0), fast::exp(-87.0));
    assert!(fast::exp(-87.0) > 0.0 && fast::exp(1000.0).is_finite());
}

fn metadata(config: Config) -> Metadata {
    let features: Vec<String> = (0..config.input).map(|i| format!("metric_{i}")).collect();
    Metadata {
        format: FORMAT,
        // Wider than any test window: the level term stays 0 unless a test moves it.
        levels: Some(Levels { weight: 1.0, rows: 4, highs: vec![10.0; config.input] }),
        app_type: "web".to_owned(),
        version: "7".to_owned(),
        created_at: "2026-01-05T00:00:00Z".to_owned(),
        created_from: "test".to_owned(),
        normalisation: (0..config.input).map(|i| FeatureScale { mean: i as f64, std: 2.0 }).collect(),
        features,
        window: WindowShape { points: 16, step_ms: 10_000 },
        model: config,
        calibration: Calibration {
            anchor_error: 0.5,
            anchor_quantile: 0.995,
            anchor_score: 30.0,
            points_per_doubling: 20.0,
        },
        training: Training {
            first_event_ms: 1,
            last_event_ms: 2,
            train_windows: 3,
            validation_windows: 4,
            epochs: 5,
            batch_size: 6,
            learning_rate: 1e-3,
            seed: 8,
        },
        validation: Validation { mean_error: 0.1, at_most_30_share: 0.995, windows: 4 },
    }
}

fn small_model() -> AnomalyModel {
    let config = Config { input: 3, hidden: 8, layers: 1, score_steps: 4 };
    AnomalyModel::from_parts(metadata(config), random_tensors(config, 11)).expect("model")
}

fn windows(n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (0..16 * 3).map(|_| rng.random_range(-2.0..4.0)).collect()).collect()
}

#[test]
fn save_and_load_give_back_the_same_model() {
    let model = small_model();
    let dir = tempfile::tempdir().expect("tempdir");
    model.save(dir.path()).expect("save");
    let loaded = AnomalyModel::load(dir.path()).expect("load");
    assert_eq!(loaded.metadata(), model.metadata());
    let ws = windows(20, 1);
    let refs: Vec<&[f64]> = ws.iter().map(Vec::as_slice).collect();
    assert_eq!(loaded.score(&refs), model.score(&refs));
    assert!(model.score(&refs).iter().all(Option::is_some));
    // The newest version is found by name.
    let root = tempfile::tempdir().expect("tempdir");
    model.save(&root.path().join("web").join("9")).expect("save 9");
    model.save(&root.path().join("web").join("10")).expect("save 10");
    let latest = artifact::latest_version(root.path(), "web").expect("latest");
    assert!(latest.ends_with("web/10"), "{latest:?}");
    assert!(matches!(artifact::latest_version(root.path(), "cache"), Err(ModelError::NotFound { .. })));
}

/// Writes the model, lets `spoil` change the files, and returns the load error.
fn load_after(spoil: impl Fn(&Path)) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    small_model().save(dir.path()).expect("save");
    spoil(dir.path());
    match AnomalyModel::load(dir.path()) {
        Ok(_) => panic!("a spoilt model loaded"),
        Err(e) => e.to_string(),
    }
}

fn edit_json(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join("metadata.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec(&v).expect("json")).expect("write");
}

fn edit_tensors(dir: &Path, edit: impl Fn(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut m = candle_core::safetensors::load(&path, &Device::Cpu).expect("load");
    edit(&mut m);
    candle_core::safetensors::save(&m, &path).expect("save");
}

#[test]
fn corrupt_or_mismatched_files_are_refused_with_the_file_and_the_reason() {
    let e = load_after(|d| std::fs::write(d.join("metadata.json"), "{\"format\": 1,").expect("write"));
    assert!(e.contains("metadata.json") && e.contains("not valid model metadata"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["surprise"] = 1.into()));
    assert!(e.contains("metadata.json") && e.contains("unknown field"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["features"][1] = "metric_0".into()));
    assert!(e.contains("metadata.json") && e.contains("listed twice"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["model"]["input"] = 4.into()));
    assert!(e.contains("metadata.json") && e.contains("3 features but model.input is 4"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["normalisation"][2]["std"] = 0.0.into()));
    assert!(e.contains("metadata.json") && e.contains("metric_2"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["calibration"]["anchor_error"] = (-1.0).into()));
    assert!(e.contains("anchor_error"), "{e}");
    let e = load_after(|d| std::fs::write(d.join("model.safetensors"), b"not tensors").expect("write"));
    assert!(e.contains("model.safetensors") && e.contains("not a readable safetensors file"), "{e}");
    let e = load_after(|d| std::fs::remove_file(d.join("model.safetensors")).expect("rm"));
    assert!(e.contains("model.safetensors") && e.contains("cannot read"), "{e}");
    let e = load_after(|d| edit_tensors(d, |m| drop(m.remove("lstm.bias_hh_l0"))));
    assert!(e.contains("model.safetensors") && e.contains("tensor lstm.bias_hh_l0 is missing"), "{e}");
    let e = load_after(|d| edit_tensors(d, |m| drop(m.insert("head.bias".to_owned(), t(&[0.0; 4], &[4])))));
    assert!(e.contains("head.bias has shape [4]") && e.contains("expected [3]"), "{e}");
    let e = load_after(|d| edit_tensors(d, |m| drop(m.insert("lstm.weight_ih_l1".to_owned(), t(&[0.0], &[1])))));
    assert!(e.contains("tensor lstm.weight_ih_l1 is not expected"), "{e}");
    let e = load_after(|d| edit_tensors(d, |m| drop(m.insert("head.bias".to_owned(), t(&[0.0, f32::NAN, 0.0], &[3])))));
    assert!(e.contains("head.bias holds values that are not finite"), "{e}");
    let e = load_after(|d| {
        edit_tensors(d, |m| {
            let b = m["head.bias"].to_dtype(DType::F64).expect("f64");
            m.insert("head.bias".to_owned(), b);
        })
    });
    assert!(e.contains("dtype f64"), "{e}");
}

#[test]
fn windows_cut_otherwise_are_refused() {
    let model = small_model();
    let features: Vec<String> = (0..3).map(|i| format!("metric_{i}")).collect();
    model.check_window(&features, 16, 10_000).expect("same cut");
    let mut reordered = features.clone();
    reordered.swap(0, 1);
    let e = model.check_window(&reordered, 16, 10_000).expect_err("reordered").to_string();
    assert!(e.contains("model web/7 expects features"), "{e}");
    assert!(model.check_window(&features, 64, 10_000).is_err());
    assert!(model.check_window(&features, 16, 1_000).is_err());
}

#[test]
fn missing_values_are_masked_and_empty_windows_have_no_score() {
    let model = small_model();
    let ws = windows(3, 2);
    let mut gappy = ws[0].clone();
    // Channel 1 missing throughout: scored on channels 0 and 2 only.
    for v in gappy.iter_mut().skip(1).step_by(3) {
        *v = f64::NAN;
    }
    let empty = vec![f64::NAN; 48];
    let short = vec![0.0; 47];
    let got = model.score(&[&ws[0], &gappy, &empty, &short, &ws[1]]);
    assert!(got[0].is_some() && got[1].is_some() && got[4].is_some());
    assert_eq!(got[2], None);
    assert_eq!(got[3], None);
    // The batch gives what each window alone gives.
    assert_eq!(model.score(&[&ws[1]])[0], got[4]);
    // The gappy window's error is the error of its two present channels: recompute it
    // from the forecasts by hand.
    let m = model.metadata();
    let mut x = Vec::new();
    normalise_into(&gappy, &m.normalisation, &mut x);
    assert!(x.iter().skip(1).step_by(3).all(|&v| v == 0.0), "missing inputs enter as the mean");
    let mut f = vec![0f32; x.len()];
    model.fused.forecast(&x, 16, &mut f);
    let (mut sum, mut n) = (0.0, 0);
    for t in 16 - 1 - 4..16 - 1 {
        for ch in [0, 2] {
            let d = f64::from(f[t * 3 + ch]) - f64::from(x[(t + 1) * 3 + ch]);
            sum += d * d;
            n += 1;
        }
    }
    let error = got[1].expect("scored").error;
    assert!((error - sum / f64::from(n)).abs() < 1e-12, "{error} vs {}", sum / f64::from(n));
}

#[test]
fn the_shipped_models_load_for_every_simulated_application_type() {
    for app in ["web", "database", "cache", "worker"] {
        let model = AnomalyModel::shipped(app).unwrap_or_else(|e| panic!("{app}: {e}"));
        let m = model.metadata();
        assert_eq!(m.app_type, app);
        let features: Vec<String> = crate::window::features::DEFAULT_FEATURES.iter().map(|f| (*f).to_owned()).collect();
        model.check_window(&features, 64, 10_000).expect("the detector's default windows");
        assert!(m.validation.at_most_30_share >= 0.99, "{app}: {:?}", m.validation);
    }
}

#[test]
fn values_above_the_training_highs_add_to_the_error() {
    let model = small_model();
    let ws = windows(1, 3);
    let inside = model.score(&[&ws[0]])[0].expect("scored");
    // Channel 0 of the last row 18 units above its training high (10): 9 deviations
    // (std 2) out, 81 squared over the 4 × 3 cells of the level rows, on top of the forecast error.
    let mut out = ws[0].clone();
    out[15 * 3] = 28.0;
    let far = model.score(&[&out])[0].expect("scored");
    let m = model.metadata();
    let mut x = Vec::new();
    normalise_into(&out, &m.normalisation, &mut x);
    let mut f = vec![0f32; x.len()];
    model.fused.forecast(&x, 16, &mut f);
    let forecast = window_error(&out, &x, &f, 3, 4).expect("error");
    assert!((far.error - forecast - 81.0 / 12.0).abs() < 1e-9, "{} = {forecast} + level", far.error);
    assert!(far.score > inside.score, "{far:?} vs {inside:?}");
    // Far below counts nothing (more resources never answer a quiet instance), nor does
    // anything at or under the highs.
    let mut low = ws[0].clone();
    low[15 * 3 + 1] = -28.0;
    let levels = m.levels.as_ref().expect("format 2");
    assert_eq!(level_error(&low, &m.normalisation, levels), 0.0);
    assert_eq!(level_error(&ws[0], &m.normalisation, levels), 0.0);
    // A row before the last `rows` does not count.
    let mut early = ws[0].clone();
    early[3] = 28.0;
    assert_eq!(level_error(&early, &m.normalisation, levels), 0.0);
    // The weight scales the term; 0 leaves the forecast error alone.
    let heavy = Levels { weight: 3.0, ..levels.clone() };
    let light = Levels { weight: 0.0, ..levels.clone() };
    assert!((level_error(&out, &m.normalisation, &heavy) - 3.0 * 81.0 / 12.0).abs() < 1e-9);
    assert_eq!(level_error(&out, &m.normalisation, &light), 0.0);
}

#[test]
fn format_1_models_load_and_score_by_the_forecast_alone() {
    let model = small_model();
    let mut meta = model.metadata().clone();
    meta.format = 1;
    meta.levels = None;
    let old = AnomalyModel::from_parts(meta, model.tensors.clone()).expect("format 1");
    let dir = tempfile::tempdir().expect("tempdir");
    old.save(dir.path()).expect("save");
    let json = std::fs::read_to_string(dir.path().join("metadata.json")).expect("read");
    assert!(!json.contains("levels"), "format 1 metadata is written as before: {json}");
    let old = AnomalyModel::load(dir.path()).expect("load format 1");
    let mut w = windows(1, 4).remove(0);
    w[15 * 3] = 28.0;
    let (new, old) = (model.score(&[&w])[0].expect("new"), old.score(&[&w])[0].expect("old"));
    assert!(new.error > old.error, "the level term is format 2's: {new:?} vs {old:?}");
    let e = load_after(|d| edit_json(d, |v| v["format"] = 1.into()));
    assert!(e.contains("format 1 has no levels"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["format"] = 3.into()));
    assert!(e.contains("format 3 is not one this build reads (1 to 2)"), "{e}");
    let e = load_after(|d| edit_json(d, |v| drop(v.as_object_mut().expect("object").remove("levels"))));
    assert!(e.contains("format 2 needs levels"), "{e}");
    let e = load_after(|d| edit_json(d, |v| drop(v["levels"]["highs"].as_array_mut().expect("array").pop())));
    assert!(e.contains("2 level highs for 3 features"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["levels"]["rows"] = 17.into()));
    assert!(e.contains("levels.rows must be from 1 to 16"), "{e}");
    let e = load_after(|d| edit_json(d, |v| v["levels"]["weight"] = (-1.0).into()));
    assert!(e.contains("levels.weight"), "{e}");
}
