//! Pod sandboxes (being written).
