//! What drivers keep per shard beyond single connections (QUIC endpoints,
//! the shard ring), held by the shard without it knowing their types, so
//! a stop can wait for them and end them.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

/// A driver's per-shard state, as a stop sees it.
pub(crate) trait DriverState: 'static {
    /// Whether it still has work a stop must wait for (connections whose
    /// last bytes are not yet acknowledged).
    fn busy(&self) -> bool {
        false
    }
    /// Ends it once every session is gone: sockets close, buffers return.
    fn shutdown(&self) {}
}

type Entry = (Rc<dyn Any>, Rc<dyn DriverState>);

/// The registry: at most one state per driver type.
#[derive(Default)]
pub(crate) struct Drivers {
    /// Each state twice: as `Any`, to find it by type, and as a
    /// `DriverState`, for a stop.
    all: RefCell<Vec<Entry>>,
}

impl Drivers {
    /// The state of type `T`, if a driver registered one.
    pub fn get<T: DriverState>(&self) -> Option<Rc<T>> {
        self.all
            .borrow()
            .iter()
            .find_map(|(any, _)| Rc::clone(any).downcast::<T>().ok())
    }

    /// The state of type `T`, made by `make` the first time.
    // QUIC's endpoints are the one state made on first use.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub fn get_or_insert_with<T: DriverState>(&self, make: impl FnOnce() -> T) -> Rc<T> {
        if let Some(t) = self.get::<T>() {
            return t;
        }
        let t = Rc::new(make());
        self.all.borrow_mut().push((t.clone(), t.clone()));
        t
    }

    /// Registers `t` (a state made elsewhere, or one that may fail).
    pub fn insert<T: DriverState>(&self, t: Rc<T>) {
        self.all.borrow_mut().push((t.clone(), t));
    }

    /// Whether any driver still has work a stop must wait for.
    pub fn busy(&self) -> bool {
        self.all.borrow().iter().any(|(_, d)| d.busy())
    }

    /// Ends every driver's state (a stop, once every session is gone).
    pub fn shutdown(&self) {
        let all = std::mem::take(&mut *self.all.borrow_mut());
        for (_, d) in all {
            d.shutdown();
        }
    }
}
