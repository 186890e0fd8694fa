;; scribble: a reactor that checks the first 2 MiB of its memory are still
;; zero, as in its snapshot, then fills them with 0xff. It returns 0 when it
;; found them zero and 1 when a previous request's bytes showed through:
;; every request of a correctly reset instance returns 0.
(module
  (memory (export "memory") 48)
  (func (export "_initialize"))
  (func (export "kindling_handle") (result i32)
    (local $i i32)
    (block $dirty
      (loop $check
        (br_if $dirty (i64.ne (i64.load (local.get $i)) (i64.const 0)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br_if $check (i32.lt_u (local.get $i) (i32.const 2097152))))
      (memory.fill (i32.const 0) (i32.const 255) (i32.const 2097152))
      (return (i32.const 0)))
    (i32.const 1)))
