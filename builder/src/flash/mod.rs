//! picluster flash (in progress)
