# Prints, for each failed test that has no failed subtest, the last lines
# its own output had in a `go test -v` log (parallel tests interleave;
# go test names the test before each switch), so that the reason for a
# failure stands at the end of CI's output, where it is kept.
# Usage: awk -v keep=N -f .ci/failures.awk LOG
BEGIN { if (keep == "") keep = 30 }
/^=== (RUN|CONT|NAME|PAUSE) / { cur = $3; next }
/^ *--- (PASS|FAIL|SKIP): / {
	if ($2 == "FAIL:" && !($3 in failed)) { failed[$3] = 1; order[++nf] = $3 }
	next
}
/^(PASS|FAIL|ok|FAIL\t)/ { next }
cur != "" { n[cur]++; line[cur, n[cur]] = $0 }
END {
	for (i = 1; i <= nf; i++) {
		t = order[i]; leaf = 1
		for (j = 1; j <= nf; j++) if (index(order[j], t "/") == 1) leaf = 0
		if (!leaf) continue
		from = n[t] - keep + 1; if (from < 1) from = 1
		printf "ci: %s failed; its last %d lines:\n", t, n[t] - from + 1
		for (k = from; k <= n[t]; k++) print "  " line[t, k]
	}
}
