# c
a { b = [1, "x", true] }
/* x */ "q" = "a\"b"
