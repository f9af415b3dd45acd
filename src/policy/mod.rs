//! Policy: which rules apply where, and (with the verification issue) the rules that turn verified
//! evidence into a verdict. Pure functions of the configuration and their inputs: no I/O here.

pub mod gate;
pub mod namespaces;
pub mod retention;
pub mod scan;
pub mod tags;
pub mod verify;
