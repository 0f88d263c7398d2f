//! virtrigaud provider for kubevirt (work in progress: not yet implemented).
