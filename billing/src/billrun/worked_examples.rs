//! Worked pricing examples from public pricing documentation (being written).
