;; spinreactor: a reactor whose handler spins forever; only a deadline
;; stops it. Its snapshot is fine: _initialize returns at once.
(module
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "kindling_handle") (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
