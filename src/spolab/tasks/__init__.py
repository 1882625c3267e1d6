"""Tasks: the list-function DSL (listdsl), its problems and splits (problems), the prompt layout
(render), and the enumerable exact-optimum testbed (testbed)."""
