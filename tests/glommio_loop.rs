//! The vendored glommio's loop (vendor/glommio/README.md, fifth change) keeps its
//! timers armed across trips round the loop instead of re-arming them.
//! These check the wake-ups that change could lose: a timer due within the
//! flush that arms it, and a preemption landing before the task queues run.
//! A lost wake-up shows as a run that never ends, caught by the guard.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Far above the few hundred milliseconds each run takes.
const GUARD: Duration = Duration::from_secs(60);

fn on_executor<F>(name: &str, f: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        ex.run(f());
        let _ = tx.send(());
    });
    rx.recv_timeout(GUARD)
        .unwrap_or_else(|_| panic!("{name}: the executor slept through its wake-ups"));
}

#[test]
fn two_tasks_of_short_sleeps_both_finish() {
    // Timers due every millisecond from two tasks: the next one is often
    // due within microseconds when the executor arms it and goes to sleep.
    for round in 0..5 {
        on_executor(&format!("round {round}"), || async {
            let other = glommio::spawn_local(async {
                for _ in 0..100 {
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                }
            });
            for _ in 0..200 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            other.await;
        });
    }
}

#[test]
fn a_timer_after_an_idle_spell_still_fires() {
    // Idle long enough for the preemption timer (100 ms) to fire while the
    // executor sleeps, so the next sleep cancels it; then timers must
    // still wake it.
    on_executor("idle spell", || async {
        for _ in 0..3 {
            glommio::timer::sleep(Duration::from_millis(250)).await;
            for _ in 0..20 {
                glommio::timer::sleep(Duration::from_micros(50)).await;
            }
        }
    });
}

#[test]
fn a_busy_task_does_not_starve_a_sleeping_one() {
    // One task yields in a loop (the queue never empties, preemption timers
    // fire mid-run); the other's timers must still be served.
    on_executor("busy and sleeping", || async {
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let flag = done.clone();
        let busy = glommio::spawn_local(async move {
            while !flag.get() {
                glommio::yield_if_needed().await;
            }
        });
        for _ in 0..10 {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        done.set(true);
        busy.await;
    });
}
