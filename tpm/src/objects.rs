//! Transient objects: every one is created or loaded inside a `with_*` scope and flushed when it ends, on every
//! path (swtpm has no resource manager and three object slots; a real TPM's resource manager flushes only when
//! the connection closes, which a daemon's never does).

use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;

use crate::esapi::{step_error, Conn, OpError};
use crate::key::KeyType;
use crate::secret::Password;
use crate::templates::srk_template;

/// Runs `f` with a transient object, flushing it afterwards whatever `f` returned.
pub(crate) fn with_transient<R>(
    conn: &mut Conn,
    object: KeyHandle,
    f: impl FnOnce(&mut Conn) -> Result<R, OpError>,
) -> Result<R, OpError> {
    let result = f(conn);
    let flushed = conn.ctx.flush_context(ObjectHandle::from(object));
    match (result, flushed) {
        (Ok(r), Ok(())) => Ok(r),
        (Ok(_), Err(e)) => Err(OpError::Tss(e)),
        (Err(e), _) => Err(e),
    }
}

/// Creates the H-1/H-2 SRK (owner hierarchy, `owner` password) and runs `f` with it, flushing it afterwards.
pub(crate) fn with_srk<R>(
    conn: &mut Conn,
    device: &str,
    key_type: KeyType,
    owner: &Password,
    f: impl FnOnce(&mut Conn, KeyHandle) -> Result<R, OpError>,
) -> Result<R, OpError> {
    conn.ctx.tr_set_auth(ObjectHandle::Owner, owner.auth()?)?;
    let template = srk_template(key_type)?;
    let srk = conn
        .ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(|e| step_error(device, "create the storage key (SRK)", Some("owner hierarchy password"), e))?;
    with_transient(conn, srk.key_handle, |conn| f(conn, srk.key_handle))
}
