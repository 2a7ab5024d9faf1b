//! The unbounded flavour, `unbounded()`: a linked list of fixed-size
//! blocks, under the channel's lock (`chan.rs`).
//!
//! # State
//!
//! ```text
//!   blocks:  [front block] -> [block] -> ... -> [back block]      spare: [block]?
//!             read ^   write                         write ^
//!
//!  front.read..front.write, then every later block's 0..write: the queued values
//!
//!  event                       what happens
//!  --------------------------  ---------------------------------------------
//!  push, back block has room   value at back.write, write += 1
//!  push, back block full       the spare block (or a new one) is linked at
//!                              the back
//!  pop                         value at front.read, read += 1
//!  front block drained, full   unlinked; kept as the spare if there is none
//!  last block drained          read = write = 0: reused in place
//! ```
//!
//! Growing never moves a queued value (a `VecDeque` would copy them all
//! on every doubling, under the lock, and keep its peak size for ever),
//! and a drained channel keeps at most two blocks. A send never waits;
//! receivers park only on an empty list and a send hands its value to the
//! oldest of them directly (`chan.rs`): there are never parked senders.

use std::collections::LinkedList;

/// Values per block: 32 keeps a block within a few cache lines for small
/// messages and makes the per-block allocation rare.
const BLOCK_CAP: usize = 32;

struct Block<T> {
    slots: [Option<T>; BLOCK_CAP],
    /// The next value to pop.
    read: usize,
    /// The next free slot.
    write: usize,
}

impl<T> Block<T> {
    fn new() -> Block<T> {
        Block { slots: std::array::from_fn(|_| None), read: 0, write: 0 }
    }
}

/// The queued values, in blocks; see the module docs.
pub(super) struct Blocks<T> {
    /// Never empty of blocks once a value was pushed; `LinkedList` links
    /// them (each node its own allocation), moved whole between lists by
    /// `append`/`split_off` without reallocating.
    blocks: LinkedList<Block<T>>,
    /// At most one drained block, for the next push that needs one.
    spare: LinkedList<Block<T>>,
    len: usize,
}

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Blocks { blocks: LinkedList::new(), spare: LinkedList::new(), len: 0 }
    }
}

impl<T> Blocks<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, value: T) {
        if self.blocks.back().is_none_or(|back| back.write == BLOCK_CAP) {
            if self.spare.is_empty() {
                self.blocks.push_back(Block::new());
            } else {
                self.blocks.append(&mut self.spare);
            }
        }
        let back = self.blocks.back_mut().expect("a block was just linked");
        debug_assert!(back.slots[back.write].is_none(), "channel: pushing over a queued value");
        back.slots[back.write] = Some(value);
        back.write += 1;
        self.len += 1;
    }

    pub(super) fn pop(&mut self) -> Option<T> {
        let front = self.blocks.front_mut()?;
        if front.read == front.write {
            debug_assert_eq!(self.len, 0, "channel: an empty front block with values queued behind it");
            return None;
        }
        let value = front.slots[front.read].take();
        debug_assert!(value.is_some(), "channel: a queued slot was empty");
        front.read += 1;
        self.len -= 1;
        if front.read == BLOCK_CAP {
            // Drained and full: unlink it; keep it if we have no spare.
            let rest = self.blocks.split_off(1);
            let mut drained = std::mem::replace(&mut self.blocks, rest);
            if self.spare.is_empty() {
                let block = drained.front_mut().expect("split_off(1) left one block");
                block.read = 0;
                block.write = 0;
                self.spare = drained;
            }
        } else if front.read == front.write {
            // The back block (a partly filled block is the last one),
            // drained: reuse it in place.
            front.read = 0;
            front.write = 0;
        }
        value
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_across_blocks_and_reuses_them() {
        let mut blocks = Blocks::default();
        for round in 0..3 {
            for i in 0..(BLOCK_CAP * 3 + 5) {
                blocks.push((round, i));
            }
            assert_eq!(blocks.len(), BLOCK_CAP * 3 + 5);
            for i in 0..(BLOCK_CAP * 3 + 5) {
                assert_eq!(blocks.pop(), Some((round, i)));
            }
            assert_eq!(blocks.pop(), None);
            assert_eq!(blocks.len(), 0);
            assert!(blocks.blocks.len() + blocks.spare.len() <= 2, "a drained list keeps at most two blocks");
        }
    }

    #[test]
    fn interleaved_push_pop() {
        let mut blocks = Blocks::default();
        let (mut next_in, mut next_out) = (0u32, 0u32);
        for step in 0..10_000u32 {
            for _ in 0..(step % 7) {
                blocks.push(next_in);
                next_in += 1;
            }
            for _ in 0..(step % 5) {
                match blocks.pop() {
                    Some(v) => {
                        assert_eq!(v, next_out);
                        next_out += 1;
                    }
                    None => assert_eq!(next_out, next_in),
                }
            }
            assert_eq!(blocks.len(), (next_in - next_out) as usize);
        }
    }

    #[test]
    fn drops_what_is_left() {
        use std::rc::Rc;
        let counted = Rc::new(());
        let mut blocks = Blocks::default();
        for _ in 0..(BLOCK_CAP * 2 + 3) {
            blocks.push(Rc::clone(&counted));
        }
        for _ in 0..BLOCK_CAP {
            blocks.pop();
        }
        drop(blocks);
        assert_eq!(Rc::strong_count(&counted), 1);
    }
}
