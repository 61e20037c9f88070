// Prints the run's closing line, "N passed, N failed, N skipped" (scripts/test-all.sh counts it), after
// the list reporter's own summary. A test counts as failed when its outcome was not the expected one,
// flaky (passed on a retry) included; an error outside the tests (the global set-up, a file that does
// not load) counts as one failure, and so does a run that ended failed, timed out or interrupted with
// no failed test; a run whose E2E_ONLY selects no test fails.

import type { FullResult, Reporter, Suite, TestError } from '@playwright/test/reporter';

export default class SummaryReporter implements Reporter {
  private suite: Suite | null = null;
  private errors = 0;

  printsToStdio(): boolean {
    return true;
  }

  onBegin(_config: unknown, suite: Suite): void {
    this.suite = suite;
  }

  onError(_error: TestError): void {
    this.errors += 1;
  }

  async onEnd(result: FullResult): Promise<{ status: FullResult['status'] } | undefined> {
    let passed = 0;
    let failed = this.errors;
    let skipped = 0;
    const tests = this.suite?.allTests() ?? [];
    for (const test of tests) {
      const outcome = test.outcome();
      if (outcome === 'expected') passed += 1;
      else if (outcome === 'skipped') skipped += 1;
      else failed += 1; // unexpected or flaky
    }
    let status = result.status;
    const only = process.env.E2E_ONLY;
    if (only && tests.length > 0 && !tests.some((test) => test.title.includes(only))) {
      console.log(`E2E_ONLY=${JSON.stringify(only)} matches no test's name`);
      failed += 1;
      status = 'failed';
    }
    if (status !== 'passed' && failed === 0) failed = 1;
    console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
    return status === result.status ? undefined : { status };
  }
}
