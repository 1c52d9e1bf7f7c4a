//! Empty: the compat check lives in tests/.
