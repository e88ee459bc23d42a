//! Keeps the small blocks a Lua state frees for the blocks it asks for next.
//!
//! A mapping script makes the same few objects for every record (the
//! record's table and its node array, a string or two) and the collector
//! frees them by the hundred a little later. The state's own allocator
//! (mlua's, which counts every byte against `memory_limit`) hands each one
//! to the system allocator and back; here a block freed is kept, by its
//! exact size, and given out again for the next request of that size.
//!
//! Kept blocks stay allocated as far as the allocator underneath knows, so
//! they still count against the limit; when it refuses a request, every
//! kept block is given back and the request tried again, so the limit
//! refuses exactly what it refused without the pool.

use mlua::ffi;
use std::ffi::c_void;

/// The largest block kept, in bytes.
const MAX_BLOCK: usize = 256;

/// The smallest: a kept block holds the link to the next one of its size.
const MIN_BLOCK: usize = std::mem::size_of::<*mut u8>();

/// The most bytes kept at once.
const MAX_KEPT: usize = 256 * 1024;

/// The pool of one state, between Lua and the allocator it was made with.
pub(crate) struct Pool {
    inner: ffi::lua_Alloc,
    inner_ud: *mut c_void,
    /// The kept blocks of each size, each holding the address of the next.
    free: [*mut u8; MAX_BLOCK + 1],
    kept: usize,
    /// The state, while the pool is its allocator.
    state: *mut ffi::lua_State,
}

impl Pool {
    /// Puts a pool between the state of `lua` and its allocator, for as
    /// long as the guard returned lives: it must be dropped before `lua` is
    /// (declared after it, or before it in a struct).
    pub(crate) fn attach(lua: &mlua::Lua) -> mlua::Result<Attached> {
        let mut pool = None;
        // SAFETY: a call that leaves the stack as it found it, raises no
        // error, and changes nothing but the state's allocator.
        unsafe { lua.exec_raw::<()>((), |state| pool = Some(Pool::install(state)))? };
        pool.map(Attached)
            .ok_or_else(|| mlua::Error::RuntimeError("the script's memory pool was not set up".into()))
    }

    /// # Safety
    /// `state` is a live state that nothing else is using meanwhile.
    unsafe fn install(state: *mut ffi::lua_State) -> Box<Pool> {
        // The main thread lives as long as the state.
        ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_MAINTHREAD);
        let main = ffi::lua_tothread(state, -1);
        ffi::lua_pop(state, 1);
        let mut inner_ud = std::ptr::null_mut();
        let inner = ffi::lua_getallocf(main, &mut inner_ud);
        let mut pool = Box::new(Pool {
            inner,
            inner_ud,
            free: [std::ptr::null_mut(); MAX_BLOCK + 1],
            kept: 0,
            state: main,
        });
        let ud: *mut Pool = &mut *pool;
        ffi::lua_setallocf(main, alloc, ud.cast());
        pool
    }

    /// Gives the state its own allocator back, and every kept block to it.
    ///
    /// # Safety
    /// The state is still alive, and not in use meanwhile.
    unsafe fn detach(&mut self) {
        if self.state.is_null() {
            return;
        }
        ffi::lua_setallocf(self.state, self.inner, self.inner_ud);
        self.state = std::ptr::null_mut();
        self.release();
    }

    /// Gives every kept block back to the allocator underneath.
    unsafe fn release(&mut self) {
        for size in MIN_BLOCK..=MAX_BLOCK {
            let mut block = self.free[size];
            while !block.is_null() {
                let next = block.cast::<*mut u8>().read();
                (self.inner)(self.inner_ud, block.cast(), size, 0);
                block = next;
            }
            self.free[size] = std::ptr::null_mut();
        }
        self.kept = 0;
    }
}

/// A pool in use: dropping it gives the state its own allocator back.
pub(crate) struct Attached(Box<Pool>);

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: the guard is dropped before the state (see `attach`), on
        // the thread that uses it.
        unsafe { self.0.detach() }
    }
}

/// The allocator Lua calls (see `lua_Alloc`): `osize` is the block's size
/// when `ptr` is not null, and `nsize` 0 frees it.
unsafe extern "C" fn alloc(ud: *mut c_void, ptr: *mut c_void, osize: usize, nsize: usize) -> *mut c_void {
    let pool = &mut *ud.cast::<Pool>();
    if nsize == 0 {
        if !ptr.is_null() {
            if (MIN_BLOCK..=MAX_BLOCK).contains(&osize) && pool.kept + osize <= MAX_KEPT {
                ptr.cast::<*mut u8>().write(pool.free[osize]);
                pool.free[osize] = ptr.cast();
                pool.kept += osize;
            } else {
                (pool.inner)(pool.inner_ud, ptr, osize, 0);
            }
        }
        return std::ptr::null_mut();
    }
    if ptr.is_null() && (MIN_BLOCK..=MAX_BLOCK).contains(&nsize) {
        let block = pool.free[nsize];
        if !block.is_null() {
            pool.free[nsize] = block.cast::<*mut u8>().read();
            pool.kept -= nsize;
            return block.cast();
        }
    }
    let got = (pool.inner)(pool.inner_ud, ptr, osize, nsize);
    if got.is_null() && pool.kept > 0 {
        // Over the limit: what is kept is not in use.
        pool.release();
        return (pool.inner)(pool.inner_ud, ptr, osize, nsize);
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn blocks_kept_are_given_back_before_the_memory_limit_refuses() {
        let lua = Lua::new();
        lua.set_memory_limit(2 * MIB).unwrap();
        let pool = Pool::attach(&lua).unwrap();
        // About 2 000 strings of 130 bytes, then freed: the pool keeps as
        // many as it may.
        lua.load("t = {} for i = 1, 2000 do t[i] = string.rep('x', 100) .. i end")
            .exec()
            .unwrap();
        lua.load("t = nil").exec().unwrap();
        lua.gc_collect().unwrap();
        assert!(pool.0.kept > MAX_KEPT - 1024, "kept {} bytes", pool.0.kept);
        // Fits the limit only once the kept blocks are given back (it takes
        // twice its size while it is made).
        lua.load("big = string.rep('y', 960 * 1024)").exec().unwrap();
        let len: usize = lua.load("return #big").eval().unwrap();
        assert_eq!(len, 960 * 1024);
        // The limit still holds.
        let over = lua.load("big2 = string.rep('z', 600 * 1024)").exec();
        assert!(matches!(over, Err(mlua::Error::MemoryError(_))), "{over:?}");
        // Blocks of a size given out again are the ones kept.
        lua.load("big = nil").exec().unwrap();
        lua.gc_collect().unwrap();
        let kept = pool.0.kept;
        lua.load("s = string.rep('x', 100) .. 7").exec().unwrap();
        assert!(pool.0.kept < kept, "{} then {}", kept, pool.0.kept);
        // Without the pool the state goes on, and closes, with its own
        // allocator.
        drop(pool);
        lua.load("t = {} for i = 1, 100 do t[i] = string.rep('x', 50) .. i end")
            .exec()
            .unwrap();
        assert_eq!(lua.load("return #t").eval::<usize>().unwrap(), 100);
        drop(lua);
    }
}
