//! Test fixture: built against weir:plugin@1.0.0, which this host does not support.

wit_bindgen::generate!({ path: "wit", world: "flow-processor" });

struct Future;

impl Guest for Future {
    fn process(_batch: Vec<Flow>) -> Result<Processed, PluginError> {
        weir::plugin::log::log(weir::plugin::log::Level::Info, "from the future");
        Ok(Processed {
            samples: Vec::new(),
            annotations: Vec::new(),
        })
    }
}

export!(Future);
