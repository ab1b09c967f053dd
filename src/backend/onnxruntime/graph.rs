//! A head graph on ONNX Runtime (`onnxruntime.heads:=true`): the same provider as the
//! backbone, so on a Jetson the six heads do not run on the ARM cores while the backbone takes
//! ~10 ms on the GPU.

use std::path::Path;

use ort::value::TensorRef;

use super::{GraphTarget, SessionFactory};

/// One output of a run: name, shape, values.
pub type GraphOutput = (String, Vec<usize>, Vec<f32>);

/// A head graph opened on ONNX Runtime for fixed input shapes.
pub struct OrtGraph {
    session: ort::session::Session,
    outputs: Vec<String>,
}

impl std::fmt::Debug for OrtGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtGraph")
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl OrtGraph {
    /// Open `path` (of `sha256`) with `inputs` of these shapes on `factory`'s provider;
    /// `label` names its engine cache (`heads/<stem>_<h>x<w>`).
    pub fn open(
        factory: &SessionFactory,
        path: &Path,
        sha256: &str,
        label: String,
        inputs: Vec<(String, Vec<usize>)>,
    ) -> Result<Self, String> {
        let target = GraphTarget {
            path,
            sha256,
            label,
            inputs,
            dim_overrides: Vec::new(),
            // Head graphs are exported with a symbolic grid: TensorRT gets a one-shape profile.
            dynamic: true,
            variant: None,
        };
        let session = factory.open(&target).map_err(|e| e.to_string())?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(Self { session, outputs })
    }

    /// Output names in graph order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Run on `inputs` (name, shape, values; in the graph's input order).
    pub fn run(&mut self, inputs: &[(&str, &[usize], &[f32])]) -> Result<Vec<GraphOutput>, String> {
        let mut values = Vec::with_capacity(inputs.len());
        for (name, shape, data) in inputs {
            let tensor =
                TensorRef::from_array_view((shape.to_vec(), *data)).map_err(|e| e.to_string())?;
            values.push((*name, tensor));
        }
        let outputs = self.session.run(values).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let value = outputs
                .get(name)
                .ok_or_else(|| format!("the session gave no output {name}"))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            out.push((
                name.clone(),
                shape.iter().map(|&d| d.max(0) as usize).collect(),
                data.to_vec(),
            ));
        }
        Ok(out)
    }
}
