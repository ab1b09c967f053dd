//! Running a head ONNX (made by `models/train_heads.py`) on the features of a frame with tract.
//!
//! The graph reads backbone outputs by name: `patch_tokens` / `layer_<i>` as `[1, C, h, w]`
//! grids (transposed here from the backbone's `[1, h*w, C]`) and `cls` as `[1, C]`.
//!
//! The four ONNX heads (detection, segmentation, depth, classification) load the same way,
//! through [`load_onnx_head`]: the manifest beside the ONNX read and checked against the backbone
//! and the file, the graph compiled for the grid, its output names and shapes checked against
//! the head's [`OnnxHead::OUTPUTS`]; the head then takes what it needs from the manifest
//! ([`OnnxHead::from_graph`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::manifest::{manifest_path_for, HeadManifest};
use super::{check_backbone, HeadError, HeadInput, TaskHead};
use crate::backend::settings::BackendSettings;
use crate::features::PatchGrid;
use crate::model::{sha256_file, Manifest};

/// The shape an output of a head graph must have, given the manifest's class count `K` and the
/// patch grid `h x w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputShape {
    /// `[1, K, h, w]`: a value per class per patch.
    ClassGrid,
    /// `[1, n, h, w]`: `n` values per patch.
    Grid(usize),
    /// `[1, K]`: a value per class for the whole image.
    Classes,
}

impl OutputShape {
    /// The dimensions for `classes` classes on `grid`.
    pub fn dims(self, classes: usize, grid: (usize, usize)) -> Vec<usize> {
        match self {
            OutputShape::ClassGrid => vec![1, classes, grid.0, grid.1],
            OutputShape::Grid(n) => vec![1, n, grid.0, grid.1],
            OutputShape::Classes => vec![1, classes],
        }
    }
}

/// A task head that runs a head ONNX: what its graph must output, and how the head is made from
/// the loaded, checked graph.
pub trait OnnxHead: TaskHead + Sized + 'static {
    /// The graph's outputs in order: name and shape.
    const OUTPUTS: &'static [(&'static str, OutputShape)];

    /// The head named `name` around `graph` (loaded and checked for `backbone` at `grid`),
    /// taking its settings from `graph.manifest`.
    fn from_graph(
        name: &str,
        graph: HeadGraph,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError>;

    /// Load the head ONNX at `onnx` for `backbone` running at `grid` ([`load_onnx_head`]).
    fn load(
        name: &str,
        onnx: &Path,
        backbone: &Manifest,
        grid: (usize, usize),
    ) -> Result<Self, HeadError> {
        load_onnx_head(name, onnx, backbone, grid, &GraphRuntime::Tract)
    }
}

/// Load the head ONNX at `onnx` as head `H` named `name`, for `backbone` running at `grid`, run
/// by `runtime`: the graph and its manifest ([`HeadGraph::load_on`] with the names of
/// [`OnnxHead::OUTPUTS`]), each output's shape ([`HeadGraph::check_output`]), then
/// [`OnnxHead::from_graph`].
pub fn load_onnx_head<H: OnnxHead>(
    name: &str,
    onnx: &Path,
    backbone: &Manifest,
    grid: (usize, usize),
    runtime: &GraphRuntime,
) -> Result<H, HeadError> {
    let names: Vec<&str> = H::OUTPUTS.iter().map(|&(n, _)| n).collect();
    let graph = HeadGraph::load_on(onnx, backbone, grid, &names, runtime)?;
    let classes = graph.manifest.class_names.len();
    for (index, &(_, shape)) in H::OUTPUTS.iter().enumerate() {
        graph.check_output(index, &shape.dims(classes, grid))?;
    }
    H::from_graph(name, graph, backbone, grid)
}

/// Where head graphs run.
#[derive(Debug, Clone, Default)]
pub enum GraphRuntime {
    /// tract, on the CPU.
    #[default]
    Tract,
    /// ONNX Runtime on the backbone's execution provider (`onnxruntime.heads:=true`).
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(crate::backend::onnxruntime::SessionFactory),
}

impl GraphRuntime {
    /// Where the heads of a backbone run: on its ONNX Runtime provider when `settings` ask for
    /// it (`onnxruntime.heads`) and the backbone does run on onnxruntime (`in_use`, after the
    /// parity gate and any fallback); else on tract.
    pub fn for_backbone(settings: &BackendSettings, in_use: &str) -> Self {
        #[cfg(feature = "onnxruntime")]
        if settings.onnxruntime.heads && in_use == "onnxruntime" {
            return GraphRuntime::OnnxRuntime(crate::backend::onnxruntime::SessionFactory::new(
                settings,
                Arc::new(|line: &str| log::warn!("{line}")),
            ));
        }
        if settings.onnxruntime.heads && in_use != "onnxruntime" {
            log::warn!(
                "onnxruntime.heads is set but the backbone runs on {in_use}: the heads run on tract"
            );
        }
        GraphRuntime::Tract
    }

    /// Name for logs.
    pub fn name(&self) -> String {
        match self {
            GraphRuntime::Tract => "tract".into(),
            #[cfg(feature = "onnxruntime")]
            GraphRuntime::OnnxRuntime(f) => format!("onnxruntime ({})", f.provider()),
        }
    }
}

/// A compiled head graph.
#[derive(Debug)]
enum Plan {
    Tract(Arc<TypedRunnableModel>),
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(crate::backend::onnxruntime::graph::OrtGraph),
}

/// A head graph checked against its manifest and the backbone, compiled once.
#[derive(Debug)]
pub struct HeadGraph {
    /// The head's manifest.
    pub manifest: HeadManifest,
    /// The ONNX file.
    pub path: PathBuf,
    plan: Plan,
    output_names: Vec<String>,
    output_shapes: Vec<Option<Vec<usize>>>,
    grid: (usize, usize),
    channels: usize,
    /// Scratch for transposed grids, one per input.
    scratch: Vec<Vec<f32>>,
}

/// One output of a head graph.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTensor {
    /// Output name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl HeadGraph {
    /// Load `onnx` and its manifest, check both against the backbone running at `grid`, and
    /// compile the graph with tract. `expected_outputs` are the output names the task
    /// requires, in order.
    pub fn load(
        onnx: &Path,
        backbone: &Manifest,
        grid: (usize, usize),
        expected_outputs: &[&str],
    ) -> Result<Self, HeadError> {
        Self::load_on(onnx, backbone, grid, expected_outputs, &GraphRuntime::Tract)
    }

    /// [`HeadGraph::load`], the graph run by `runtime`. The checks are the same (tract reads
    /// the graph for them either way).
    pub fn load_on(
        onnx: &Path,
        backbone: &Manifest,
        grid: (usize, usize),
        expected_outputs: &[&str],
        runtime: &GraphRuntime,
    ) -> Result<Self, HeadError> {
        let manifest_path = manifest_path_for(onnx);
        if !onnx.exists() {
            return Err(HeadError::invalid(
                onnx,
                "no such head model",
                "check the path, or train one with models/train_heads.py",
            ));
        }
        let manifest = HeadManifest::load(&manifest_path)?;
        check_backbone(
            &manifest_path,
            &manifest.backbone,
            backbone,
            grid,
            &manifest.needed_layers(),
        )?;
        let sha = sha256_file(onnx)
            .map_err(|e| HeadError::invalid(onnx, e.to_string(), "check the file"))?;
        if sha != manifest.onnx_sha256 {
            return Err(HeadError::invalid(
                onnx,
                format!(
                    "sha256 {} does not match its manifest ({}): the file is corrupt or was replaced",
                    &sha[..12],
                    manifest.onnx_sha256.chars().take(12).collect::<String>()
                ),
                "copy the head ONNX and its .json together, or re-export them",
            ));
        }
        let prepare = |e: TractError| HeadError::Prepare {
            path: onnx.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx().model_for_path(onnx).map_err(prepare)?;
        let graph_inputs: Vec<String> = model
            .input_outlets()
            .map_err(prepare)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        if graph_inputs != manifest.inputs {
            return Err(HeadError::invalid(
                onnx,
                format!(
                    "graph inputs {graph_inputs:?} differ from the manifest's {:?}",
                    manifest.inputs
                ),
                "re-export the head with models/train_heads.py",
            ));
        }
        let (h, w) = grid;
        let c = backbone.hidden_size;
        for (i, name) in manifest.inputs.iter().enumerate() {
            let fact = if name == "cls" {
                f32::fact([1, c])
            } else {
                f32::fact([1, c, h, w])
            };
            model = model.with_input_fact(i, fact.into()).map_err(prepare)?;
        }
        let output_names: Vec<String> = model
            .output_outlets()
            .map_err(prepare)?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        if output_names != expected_outputs {
            return Err(HeadError::invalid(
                onnx,
                format!(
                    "graph outputs {output_names:?}, a {} head must output {expected_outputs:?}",
                    manifest.task.as_str()
                ),
                "re-export the head with models/train_heads.py (output names in models/HEADS.md)",
            ));
        }
        let typed = model.into_optimized().map_err(prepare)?;
        let output_shapes = typed
            .output_outlets()
            .map_err(prepare)?
            .iter()
            .map(|o| {
                typed
                    .outlet_fact(*o)
                    .ok()
                    .and_then(|f| f.shape.as_concrete().map(<[usize]>::to_vec))
            })
            .collect();
        let plan = match runtime {
            GraphRuntime::Tract => Plan::Tract(typed.into_runnable().map_err(prepare)?),
            #[cfg(feature = "onnxruntime")]
            GraphRuntime::OnnxRuntime(factory) => {
                let inputs = manifest
                    .inputs
                    .iter()
                    .map(|name| {
                        let dims = if name == "cls" {
                            vec![1, c]
                        } else {
                            vec![1, c, h, w]
                        };
                        (name.clone(), dims)
                    })
                    .collect();
                let stem = onnx.file_stem().and_then(|s| s.to_str()).unwrap_or("head");
                let graph = crate::backend::onnxruntime::graph::OrtGraph::open(
                    factory,
                    onnx,
                    &manifest.onnx_sha256,
                    format!("heads/{stem}_{h}x{w}"),
                    inputs,
                )
                .map_err(|reason| HeadError::Prepare {
                    path: onnx.to_path_buf(),
                    reason,
                })?;
                if graph.output_names() != output_names.as_slice() {
                    return Err(HeadError::Prepare {
                        path: onnx.to_path_buf(),
                        reason: format!(
                            "onnxruntime sees outputs {:?}, tract {output_names:?}",
                            graph.output_names()
                        ),
                    });
                }
                Plan::OnnxRuntime(graph)
            }
        };
        let scratch = vec![Vec::new(); manifest.inputs.len()];
        Ok(Self {
            manifest,
            path: onnx.to_path_buf(),
            plan,
            output_names,
            output_shapes,
            grid,
            channels: c,
            scratch,
        })
    }

    /// Check at load time that output `index` has `expected` shape, where dimension 1 counts
    /// the manifest's classes (or channels).
    pub fn check_output(&self, index: usize, expected: &[usize]) -> Result<(), HeadError> {
        let name = self.output_names.get(index).map_or("?", String::as_str);
        let Some(Some(shape)) = self.output_shapes.get(index) else {
            return Err(HeadError::invalid(
                &self.path,
                format!("output {name} has no static shape"),
                "re-export the head with models/train_heads.py (static shapes)",
            ));
        };
        if shape.as_slice() == expected {
            return Ok(());
        }
        let reason = if shape.len() == expected.len()
            && shape.len() >= 2
            && shape[1] != expected[1]
            && !self.manifest.class_names.is_empty()
        {
            format!(
                "the graph outputs {} classes in {name} {shape:?} but its manifest lists {} class names",
                shape[1], expected[1]
            )
        } else {
            format!("output {name} has shape {shape:?}, expected {expected:?}")
        };
        Err(HeadError::invalid(
            &self.path,
            reason,
            "keep each head ONNX with the .json exported with it (models/train_heads.py)",
        ))
    }

    /// Run a single-output graph and return that output's values, checking its `shape`.
    pub fn run_single(
        &mut self,
        input: &HeadInput,
        head: &str,
        shape: &[usize],
    ) -> Result<Vec<f32>, HeadError> {
        let out = self
            .run(input, head)?
            .into_iter()
            .next()
            .ok_or_else(|| HeadError::Run {
                head: head.to_string(),
                reason: "the graph gave no output".into(),
            })?;
        expect_shape(&out, shape, head)?;
        Ok(out.data)
    }

    /// Run the graph on one frame's features.
    pub fn run(&mut self, input: &HeadInput, head: &str) -> Result<Vec<HeadTensor>, HeadError> {
        let run_err = |reason: String| HeadError::Run {
            head: head.to_string(),
            reason,
        };
        let (h, w) = self.grid;
        let c = self.channels;
        let features = input.features;
        let patch = features.patch_grid();
        if (patch.height, patch.width, patch.channels) != (h, w, c) {
            return Err(run_err(format!(
                "features are a {}x{}x{} grid, the head was prepared for {h}x{w}x{c}",
                patch.height, patch.width, patch.channels
            )));
        }
        // Inputs in graph order: CLS as given, grids transposed into the scratch buffers.
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.manifest.inputs.len());
        for (name, buf) in self.manifest.inputs.iter().zip(&mut self.scratch) {
            if name == "cls" {
                shapes.push(vec![1, c]);
                continue;
            }
            let grid = if name == "patch_tokens" {
                Some(patch)
            } else {
                self.manifest
                    .layer_index(name)
                    .and_then(|i| features.layer(i))
            };
            let grid = grid.ok_or_else(|| run_err(format!("backbone output {name} missing")))?;
            tokens_to_chw(&grid, buf);
            shapes.push(vec![1, c, h, w]);
        }
        let inputs: Vec<(&str, &[usize], &[f32])> = self
            .manifest
            .inputs
            .iter()
            .zip(&shapes)
            .zip(&self.scratch)
            .map(|((name, shape), buf)| {
                let data = if name == "cls" {
                    features.cls()
                } else {
                    buf.as_slice()
                };
                (name.as_str(), shape.as_slice(), data)
            })
            .collect();
        match &mut self.plan {
            Plan::Tract(plan) => run_tract(plan, &inputs, &self.output_names, &run_err),
            #[cfg(feature = "onnxruntime")]
            Plan::OnnxRuntime(graph) => Ok(graph
                .run(&inputs)
                .map_err(run_err)?
                .into_iter()
                .map(|(name, shape, data)| HeadTensor { name, shape, data })
                .collect()),
        }
    }
}

/// Run a tract plan on `inputs` (name, shape, values).
fn run_tract(
    plan: &Arc<TypedRunnableModel>,
    inputs: &[(&str, &[usize], &[f32])],
    output_names: &[String],
    run_err: &dyn Fn(String) -> HeadError,
) -> Result<Vec<HeadTensor>, HeadError> {
    let mut values: TVec<TValue> = tvec![];
    for (_, shape, data) in inputs {
        let tensor =
            Tensor::from_shape::<f32>(shape, data).map_err(|e| run_err(format!("{e:#}")))?;
        values.push(tensor.into());
    }
    let outputs = plan.run(values).map_err(|e| run_err(format!("{e:#}")))?;
    outputs
        .into_iter()
        .zip(output_names)
        .map(|(value, name)| {
            let mut tensor = value.into_tensor();
            if tensor.datum_type() != f32::datum_type() {
                tensor = tensor
                    .cast_to::<f32>()
                    .map_err(|e| run_err(format!("{e:#}")))?
                    .into_owned();
            }
            if tensor.as_plain_ram().is_none() {
                tensor = tensor
                    .into_plain_ram()
                    .map_err(|e| run_err(format!("{e:#}")))?;
            }
            let data = tensor
                .as_plain_ram()
                .and_then(|v| v.as_slice::<f32>().ok())
                .map(<[f32]>::to_vec)
                .ok_or_else(|| run_err(format!("output {name} is not float32")))?;
            Ok(HeadTensor {
                name: name.clone(),
                shape: tensor.shape().to_vec(),
                data,
            })
        })
        .collect()
}

/// `[h*w, C]` tokens -> `[C, h, w]` planes.
pub fn tokens_to_chw(grid: &PatchGrid, out: &mut Vec<f32>) {
    let (n, c) = (grid.height * grid.width, grid.channels);
    out.clear();
    out.resize(n * c, 0.0);
    for (p, token) in grid.tokens().enumerate() {
        for (ch, &v) in token.iter().enumerate() {
            out[ch * n + p] = v;
        }
    }
}

/// Check an output's shape.
pub fn expect_shape(tensor: &HeadTensor, shape: &[usize], head: &str) -> Result<(), HeadError> {
    if tensor.shape != shape {
        return Err(HeadError::Run {
            head: head.to_string(),
            reason: format!(
                "output {} has shape {:?}, expected {shape:?}",
                tensor.name, tensor.shape
            ),
        });
    }
    Ok(())
}
