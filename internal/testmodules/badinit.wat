;; badinit: a reactor whose initialization traps.
(module
  (memory (export "memory") 1)
  (func (export "_initialize") unreachable)
  (func (export "kindling_handle") (result i32) (i32.const 0)))
