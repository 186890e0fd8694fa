;; reactor: no _start export; not runnable as a command.
(module
  (memory (export "memory") 1)
  (func (export "_initialize")))
