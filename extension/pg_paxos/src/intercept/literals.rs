//! Values as typed SQL literals that mean the same on every node: output styles that input on any
//! node parses the same way (ISO dates, postgres intervals, exact floats) and the type's
//! schema-qualified name.

use std::ffi::CStr;

use pgrx::pg_sys;

/// The output-style globals, set for one output call and restored afterwards (also when the
/// output function raises an error, since pgrx unwinds through this frame).
struct PinnedOutputStyle {
    date_style: i32,
    interval_style: i32,
    float_digits: i32,
}

impl PinnedOutputStyle {
    fn pin() -> Self {
        // SAFETY: backend-global settings read and written on the backend's only thread.
        unsafe {
            let saved = PinnedOutputStyle {
                date_style: pg_sys::DateStyle,
                interval_style: pg_sys::IntervalStyle,
                float_digits: pg_sys::extra_float_digits,
            };
            pg_sys::DateStyle = pg_sys::USE_ISO_DATES as i32;
            pg_sys::IntervalStyle = pg_sys::INTSTYLE_POSTGRES as i32;
            pg_sys::extra_float_digits = 3;
            saved
        }
    }
}

impl Drop for PinnedOutputStyle {
    fn drop(&mut self) {
        // SAFETY: as in `pin`.
        unsafe {
            pg_sys::DateStyle = self.date_style;
            pg_sys::IntervalStyle = self.interval_style;
            pg_sys::extra_float_digits = self.float_digits;
        }
    }
}

/// The schema-qualified name of a type, as SQL.
pub fn type_name(typid: pg_sys::Oid, typmod: i32) -> String {
    // SAFETY: format_type_extended returns a palloc'd C string for any type oid.
    unsafe {
        CStr::from_ptr(pg_sys::format_type_extended(
            typid,
            typmod,
            pg_sys::FORMAT_TYPE_FORCE_QUALIFY as u16,
        ))
        .to_string_lossy()
        .into_owned()
    }
}

/// The text form of a non-null datum of type `typid` in the pinned output style.
///
/// # Safety
/// `value` must be a valid datum of type `typid`.
pub unsafe fn output_text(typid: pg_sys::Oid, value: pg_sys::Datum) -> String {
    let _pinned = PinnedOutputStyle::pin();
    // SAFETY: per the contract; the output function returns a palloc'd C string.
    unsafe {
        let mut output = pg_sys::Oid::INVALID;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(typid, &mut output, &mut varlena);
        let out = pg_sys::OidOutputFunctionCall(output, value);
        CStr::from_ptr(out).to_string_lossy().into_owned()
    }
}
