//! Descriptor sets: the field names of the methods a deployment's `.protoset` files
//! describe (`protoc --include_imports --descriptor_set_out=shop.protoset shop.proto`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// A descriptor set that could not be loaded: which file, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: not a usable descriptor set (make one with `protoc --include_imports --descriptor_set_out=FILE`): {message}",
        path.display()
    )]
    Invalid { path: PathBuf, message: String },
}

/// Loaded descriptor sets, with every method's input and output message found by its
/// gRPC path once, at load: lookups on the packet path are one hash probe, shared by
/// all workers without locks.
#[derive(Clone, Debug, Default)]
pub struct Descriptors {
    pool: DescriptorPool,
    /// `/package.Service/Method` → (input, output).
    methods: HashMap<String, (MessageDescriptor, MessageDescriptor)>,
}

impl Descriptors {
    /// Loads `.protoset` files into one pool (files shared between sets, such as Google's
    /// well-known types, are taken once).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, DescriptorError> {
        let mut pool = DescriptorPool::new();
        for p in paths {
            let path = p.as_ref();
            let bytes = std::fs::read(path).map_err(|source| DescriptorError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            pool.decode_file_descriptor_set(bytes.as_slice())
                .map_err(|e| DescriptorError::Invalid {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            if pool.files().len() == 0 {
                return Err(DescriptorError::Invalid {
                    path: path.to_path_buf(),
                    message: "it describes no file".to_string(),
                });
            }
        }
        Ok(Self::from_pool(pool))
    }

    /// Descriptors from a pool built elsewhere.
    pub fn from_pool(pool: DescriptorPool) -> Self {
        let mut methods = HashMap::new();
        for service in pool.services() {
            for m in service.methods() {
                methods.insert(
                    format!("/{}/{}", service.full_name(), m.name()),
                    (m.input(), m.output()),
                );
            }
        }
        Descriptors { pool, methods }
    }

    /// The input and output messages of the method at a gRPC path
    /// (`/shop.v1.Shop/Login`), if a loaded set describes it.
    pub fn method(&self, path: &str) -> Option<(MessageDescriptor, MessageDescriptor)> {
        self.methods.get(path).cloned()
    }

    /// A message type by its full name (`shop.v1.Profile`).
    pub fn message(&self, full_name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(full_name)
    }

    /// Methods described.
    pub fn methods(&self) -> usize {
        self.methods.len()
    }
}
