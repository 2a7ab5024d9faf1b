//! Property: random trees of coroutines resuming coroutines behave exactly
//! like a sequential model of the same schedule.
//!
//! It lives in its own workspace package so that weft's own tests and
//! examples build without proptest (a fresh `cargo build --example` of weft
//! compiles 12 crates; proptest as a dev-dependency makes it 36, or 26
//! with proptest's default features off);
//! `cargo test` at the workspace root runs it with the rest. The input is a
//! tree of up to 255 coroutines, so proptest's shrinking earns its place
//! here; the sync primitives' model tests, which check private state and so
//! stay inside the crate, draw their cases from `src/test_rng.rs` instead.

use proptest::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use weft::coroutine::{Coroutine, CoroutineResult, Yielder};

/// A node of a random tree: how many times its body suspends, and its
/// children.
#[derive(Debug, Clone)]
struct Tree {
    yields: u32,
    children: Vec<Tree>,
}

/// A tree with ids assigned in preorder.
#[derive(Debug)]
struct Node {
    id: usize,
    yields: u32,
    children: Vec<Rc<Node>>,
}

fn number(tree: &Tree, next: &mut usize) -> Rc<Node> {
    let id = *next;
    *next += 1;
    let children = tree.children.iter().map(|c| number(c, next)).collect();
    Rc::new(Node { id, yields: tree.yields, children })
}

/// Trees at most `levels + 1` deep. Below the root, three of four nodes
/// have one or two children, so deep trees are common while the size stays
/// bounded (at most 2^(levels+1) - 1 nodes).
fn tree_strategy(levels: u32) -> BoxedStrategy<Tree> {
    let leaf = (0u32..4).prop_map(|yields| Tree { yields, children: Vec::new() });
    if levels == 0 {
        return leaf.boxed();
    }
    let branch = (0u32..4, prop::collection::vec(tree_strategy(levels - 1), 1..3))
        .prop_map(|(yields, children)| Tree { yields, children });
    prop_oneof![1 => leaf, 3 => branch].boxed()
}

type Log = Rc<RefCell<Vec<String>>>;

/// The schedule both implementations follow. A node's body:
///
/// ```text
/// log "enter n<id> with <input>"
/// round = 0
/// loop:
///     for each unfinished child, in order: resume it once with round;
///         log "n<id> saw n<c> yield #k" or "n<id> joined n<c> = <ret>"
///     if round < yields: round += 1; log "yield n<id> #round";
///         input = suspend(round); log "n<id> resumed with <input>"; continue
///     if every child has finished: log "exit n<id>"; return id
/// ```
///
/// The coroutine version runs each body on its own stack; the model is an
/// explicit state machine on the test's stack.
fn coroutine_body(node: Rc<Node>, log: Log, y: &Yielder<u32, u32>, input: u32) -> usize {
    log.borrow_mut().push(format!("enter n{} with {input}", node.id));
    type Child = (usize, Option<Coroutine<u32, u32, usize>>);
    let mut children: Vec<Child> = node
        .children
        .iter()
        .map(|child| {
            let (child, log) = (child.clone(), log.clone());
            let id = child.id;
            let c = Coroutine::builder()
                .stack_size(64 * 1024)
                .build(move |y: &Yielder<u32, u32>, input| coroutine_body(child, log, y, input))
                .expect("64 KiB is a valid stack size");
            (id, Some(c))
        })
        .collect();
    let mut round = 0;
    loop {
        for (child_id, slot) in children.iter_mut() {
            let Some(c) = slot else { continue };
            match c.resume(round) {
                CoroutineResult::Yield(k) => log.borrow_mut().push(format!("n{} saw n{child_id} yield #{k}", node.id)),
                CoroutineResult::Return(r) => {
                    log.borrow_mut().push(format!("n{} joined n{child_id} = {r}", node.id));
                    assert!(c.is_finished());
                    *slot = None;
                }
            }
        }
        if round < node.yields {
            round += 1;
            log.borrow_mut().push(format!("yield n{} #{round}", node.id));
            let input = y.suspend(round);
            log.borrow_mut().push(format!("n{} resumed with {input}", node.id));
            continue;
        }
        if children.iter().all(|(_, slot)| slot.is_none()) {
            log.borrow_mut().push(format!("exit n{}", node.id));
            return node.id;
        }
    }
}

/// The sequential model of `coroutine_body`: the same steps, with the
/// "program counter" kept in fields instead of on a stack.
struct Model {
    node: Rc<Node>,
    started: bool,
    round: u32,
    children: Vec<Option<Model>>,
}

enum Step {
    Yield(u32),
    Return(usize),
}

impl Model {
    fn new(node: Rc<Node>) -> Model {
        Model { node, started: false, round: 0, children: Vec::new() }
    }

    fn step(&mut self, input: u32, log: &mut Vec<String>) -> Step {
        let id = self.node.id;
        if !self.started {
            self.started = true;
            log.push(format!("enter n{id} with {input}"));
            self.children = self.node.children.iter().map(|c| Some(Model::new(c.clone()))).collect();
        } else {
            log.push(format!("n{id} resumed with {input}"));
        }
        loop {
            for slot in self.children.iter_mut() {
                let Some(child) = slot else { continue };
                let child_id = child.node.id;
                match child.step(self.round, log) {
                    Step::Yield(k) => log.push(format!("n{id} saw n{child_id} yield #{k}")),
                    Step::Return(r) => {
                        log.push(format!("n{id} joined n{child_id} = {r}"));
                        *slot = None;
                    }
                }
            }
            if self.round < self.node.yields {
                self.round += 1;
                log.push(format!("yield n{id} #{}", self.round));
                return Step::Yield(self.round);
            }
            if self.children.iter().all(Option::is_none) {
                log.push(format!("exit n{id}"));
                return Step::Return(id);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random trees of coroutines resuming coroutines (up to 8 deep, each
    /// suspending 0..4 times from inside nested stacks) produce exactly the
    /// event trace of a sequential model of the same schedule.
    #[test]
    fn coroutine_trees_match_sequential_model(tree in tree_strategy(7), inputs in prop::collection::vec(0u32..1000, 8)) {
        let root = number(&tree, &mut 0);

        let mut expected = Vec::new();
        let mut model = Model::new(root.clone());
        let mut model_results = Vec::new();
        let mut i = 0;
        loop {
            match model.step(inputs[i % inputs.len()], &mut expected) {
                Step::Yield(k) => model_results.push(CoroutineResult::Yield(k)),
                Step::Return(r) => {
                    model_results.push(CoroutineResult::Return(r));
                    break;
                }
            }
            i += 1;
        }

        let log: Log = Rc::new(RefCell::new(Vec::new()));
        let (r, l) = (root.clone(), log.clone());
        let mut c = Coroutine::builder()
            .stack_size(64 * 1024)
            .build(move |y: &Yielder<u32, u32>, input| coroutine_body(r, l, y, input))
            .unwrap();
        let mut results = Vec::new();
        let mut i = 0;
        loop {
            let result = c.resume(inputs[i % inputs.len()]);
            let done = matches!(result, CoroutineResult::Return(_));
            results.push(result);
            if done {
                break;
            }
            i += 1;
        }
        prop_assert!(c.is_finished());
        prop_assert_eq!(results, model_results);
        prop_assert_eq!(&*log.borrow(), &expected);
    }
}
