//! Recording an iteration allocates nothing in steady state: once the reasons have been
//! seen and the run's windows filled, the loop's thread records
//! iterations — start, outcomes, failures, the population and its champion, finish —
//! without a single heap allocation. An allocator that counts the calls made by each
//! thread proves it.
//!
//! What an alert or a warning changing state writes (its event, its log line, its
//! delivery) does allocate: it is rare by nature, and the run here keeps every rule
//! steady after the warm-up (the slowdown warning, which a loaded machine's timing
//! could flip, is set out of reach).

#[path = "support/quiet.rs"]
mod quiet;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use loopwatch::{Monitor, Population, Thresholds};
use quiet::quiet_monitor;

/// The system allocator, counting the allocations of the calling thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the count is a
// const-initialised thread-local that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn record(monitor: &Monitor, iterations: u64) {
    for i in 0..iterations {
        let mut iteration = monitor.start_iteration();
        for k in 0..20 {
            match k % 5 {
                0 => iteration.record_failure("too few trades"),
                1 if i % 3 == 0 => iteration.record_failure("timeout"),
                _ => iteration.record_success(1.0 + k as f64 * 0.01, 0.1),
            }
        }
        iteration.record_population(Population::new(20, 17, 0.8).with_champion("ma-cross-10-50"));
        iteration.finish();
    }
}

#[test]
fn recording_allocates_nothing_in_steady_state() {
    let thresholds = Thresholds::default().with_slowdown_factor(1e9).unwrap();
    let monitor = quiet_monitor().thresholds(thresholds).build().unwrap();
    // Warm-up: the reasons are interned, the champion booked and the windows filled.
    // The queue holds 512 events, one an iteration (two with a new champion): whenever an event finds it full,
    // the loop's thread settles it itself, so the count includes those settles.
    record(&monitor, 1_000);
    let before = allocations();
    record(&monitor, 5_000);
    let made = allocations() - before;
    assert_eq!(
        made, 0,
        "the loop's thread allocated {made} times in 5,000 iterations"
    );
    // And the iterations are all there.
    assert_eq!(monitor.summary().iterations, 6_000);
    monitor.shutdown();
}

#[test]
fn an_evaluation_allocates_only_its_id() {
    let monitor = quiet_monitor().build().unwrap();
    monitor.evaluation("warm-up").ok();
    let before = allocations();
    let evaluation = monitor.evaluation("prog-17");
    evaluation.ok();
    let made = allocations() - before;
    // Its id, shared by the start and the end; the guard's drop, after `ok`, adds
    // nothing.
    assert_eq!(made, 1, "an evaluation allocated {made} times");
    monitor.shutdown();
}
