//! Address mapping of raid5f and raid6 (rotating parity).
