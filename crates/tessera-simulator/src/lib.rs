//! The software Tessera card.
//!
//! * [`eeprom`]: a model of card memory where every cell write is counted,
//!   with a commit journal that makes multi-field commits atomic under power
//!   loss, and a hook to cut power at the N-th write;
//! * [`image`]: card images as versioned files, saved atomically;
//! * [`SimCard`]: the applet hosted as a card: power, reset, ISO 7816
//!   response chaining (`61xx`/GET RESPONSE), fault hooks, and the
//!   in-process [`Transport`](tessera_transport::Transport);
//! * [`vpcd`]: the bridge that puts a [`SimCard`] behind a real PC/SC daemon.
//!
//! The simulator never changes applet behaviour; it only hosts it.

pub mod eeprom;
pub mod image;
mod sim;
pub mod vpcd;

pub use eeprom::{Eeprom, PowerCut};
pub use image::{ImageError, IMAGE_FORMAT_VERSION};
pub use sim::{Faults, RelayRewrite, SimCard, SimError, ATR};
pub use tessera_crypto::rng::Rng as SimRng;
