//! The self-growing cluster of a replica table (`--replica-table`): a
//! replica finds its cluster or forms it ([`discovery`]), keeps its row in
//! the cluster configuration table, and the leader keeps the voter set at
//! the size the number of live replicas asks for ([`growth`]).

pub mod discovery;
pub mod growth;
