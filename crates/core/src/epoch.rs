//! Epochs: the counter of a placement range, bumped at every cutover.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A placement range's epoch. A region node accepts a write only for a range it owns at the
/// caller's epoch; a cutover commits `epoch + 1` in the control plane before the target owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    pub const INITIAL: Epoch = Epoch(1);

    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
