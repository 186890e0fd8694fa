;; snapreactor: a reactor for snapshot tests. _initialize sets a mutable
;; global to 40 and a memory word to 1 (next to a data segment); every
;; kindling_handle call increments both and prints them with the data:
;; "init:41:2\n" from any instance restored from the snapshot.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (data (i32.const 16) "init:")
  (func (export "_initialize")
    (global.set $g (i32.const 40))
    (i32.store (i32.const 200) (i32.const 1)))
  (func (export "kindling_handle") (result i32)
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (i32.store (i32.const 200) (i32.add (i32.load (i32.const 200)) (i32.const 1)))
    ;; "init:" is at 16..20; digits of g at 21,22; ':' 23; word at 24; '\n' 25
    (i32.store8 (i32.const 21) (i32.add (i32.const 48) (i32.div_u (global.get $g) (i32.const 10))))
    (i32.store8 (i32.const 22) (i32.add (i32.const 48) (i32.rem_u (global.get $g) (i32.const 10))))
    (i32.store8 (i32.const 23) (i32.const 58))
    (i32.store8 (i32.const 24) (i32.add (i32.const 48) (i32.load (i32.const 200))))
    (i32.store8 (i32.const 25) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.const 0)))
