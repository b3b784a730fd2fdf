import assert from 'node:assert/strict';
import { test } from 'node:test';

import { RestartQueue } from '../../src/common/restart';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((yes, no) => {
    resolve = yes;
    reject = no;
  });
  return { promise, resolve, reject };
}

test('restarts run one at a time; requests during one collapse into one more', async () => {
  const runs: ReturnType<typeof deferred>[] = [];
  let concurrent = 0;
  let most = 0;
  const queue = new RestartQueue(async () => {
    concurrent++;
    most = Math.max(most, concurrent);
    const run = deferred();
    runs.push(run);
    try {
      await run.promise;
    } finally {
      concurrent--;
    }
  });

  const first = queue.request();
  const second = queue.request();
  const third = queue.request();
  assert.equal(second, third, 'requests while one runs share the queued restart');
  assert.equal(runs.length, 1);

  runs[0]?.resolve();
  await first;
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(runs.length, 2, 'the queued restart runs after the first');
  runs[1]?.resolve();
  await second;
  assert.equal(most, 1);
  assert.equal(queue.busy, false);
  await queue.idle();
});

test('a failed restart fails its callers, and the queued one still runs', async () => {
  let calls = 0;
  const gate = deferred();
  const queue = new RestartQueue(async () => {
    calls++;
    if (calls === 1) {
      await gate.promise;
      throw new Error('spawn leeward ENOENT');
    }
  });
  const first = queue.request();
  const second = queue.request();
  gate.resolve();
  await assert.rejects(first, /ENOENT/);
  await second;
  assert.equal(calls, 2);
});
