//! Protobuf and gRPC code generated at build time (build.rs, protox + tonic-prost-build) from plugin/proto.
//! Module nesting mirrors the proto packages, as the generated cross-package paths expect.

#![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic, unreachable_pub)]

/// go-plugin's broker, controller and stdio services (proto package `plugin`).
pub mod goplugin {
    tonic::include_proto!("plugin");
}

/// SPIRE's packages.
pub mod spire {
    /// Plugin interfaces and types.
    pub mod plugin {
        /// Bundle and key types.
        pub mod types {
            tonic::include_proto!("spire.plugin.types");
        }
        /// Agent plugin interfaces.
        pub mod agent {
            /// NodeAttestor.
            pub mod nodeattestor {
                /// v1.
                pub mod v1 {
                    tonic::include_proto!("spire.plugin.agent.nodeattestor.v1");
                }
            }
            /// KeyManager.
            pub mod keymanager {
                /// v1.
                pub mod v1 {
                    tonic::include_proto!("spire.plugin.agent.keymanager.v1");
                }
            }
        }
        /// Server plugin interfaces.
        pub mod server {
            /// NodeAttestor.
            pub mod nodeattestor {
                /// v1.
                pub mod v1 {
                    tonic::include_proto!("spire.plugin.server.nodeattestor.v1");
                }
            }
            /// KeyManager.
            pub mod keymanager {
                /// v1.
                pub mod v1 {
                    tonic::include_proto!("spire.plugin.server.keymanager.v1");
                }
            }
            /// BundlePublisher.
            pub mod bundlepublisher {
                /// v1.
                pub mod v1 {
                    tonic::include_proto!("spire.plugin.server.bundlepublisher.v1");
                }
            }
        }
    }
    /// Services every plugin may serve.
    pub mod service {
        /// Common services.
        pub mod common {
            /// Config.
            pub mod config {
                /// v1.
                pub mod v1 {
                    tonic::include_proto!("spire.service.common.config.v1");
                }
            }
        }
        /// SPIRE-private services.
        pub mod private {
            /// Init.
            pub mod init {
                /// v1.
                pub mod v1 {
                    tonic::include_proto!("spire.service.private.init.v1");
                }
            }
        }
    }
}

pub use spire::plugin::agent::keymanager::v1 as agent_keymanager;
pub use spire::plugin::agent::nodeattestor::v1 as agent_nodeattestor;
pub use spire::plugin::server::bundlepublisher::v1 as bundlepublisher;
pub use spire::plugin::server::keymanager::v1 as server_keymanager;
pub use spire::plugin::server::nodeattestor::v1 as server_nodeattestor;
pub use spire::plugin::types;
pub use spire::service::common::config::v1 as config;
pub use spire::service::private::init::v1 as init;
