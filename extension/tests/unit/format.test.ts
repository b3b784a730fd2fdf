import assert from 'node:assert/strict';
import { test } from 'node:test';

import { errorMessage, expiryLabel, hardwareLabel, rttLabel } from '../../src/common/format';
import { NOW } from '../support/fixtures';

test('hardware reads as CPU · GiB, GPUs only when there are some', () => {
  assert.equal(hardwareLabel({ cpus: 8, memoryGib: 32, gpus: 0 }), '8 CPU · 32 GiB');
  assert.equal(hardwareLabel({ cpus: 8, memoryGib: 32, gpus: 2 }), '8 CPU · 32 GiB · 2 GPU');
});

test('RTT is whole milliseconds, <1 ms on loopback, "no answer" without one', () => {
  assert.equal(rttLabel(12.4), '12 ms');
  assert.equal(rttLabel(0.31), '<1 ms');
  assert.equal(rttLabel(null), 'no answer');
});

test('expiry reads relative to now', () => {
  const at = (ms: number) => new Date(NOW.getTime() + ms).toISOString();
  const temporary = (expiresAt: string | null) => ({ lifespan: 'temporary' as const, expiresAt });
  assert.equal(expiryLabel(temporary(at(8 * 3_600_000)), NOW), 'expires in 8 h');
  assert.equal(expiryLabel(temporary(at(25 * 60_000)), NOW), 'expires in 25 min');
  assert.equal(expiryLabel(temporary(at(5 * 86_400_000)), NOW), 'expires in 5 days');
  assert.equal(expiryLabel(temporary(at(-1000)), NOW), 'expired');
  assert.equal(expiryLabel({ lifespan: 'permanent', expiresAt: null }, NOW), 'permanent');
});

test('an error reads as its message', () => {
  assert.equal(errorMessage(new Error('No room in north.')), 'No room in north.');
  assert.equal(errorMessage('plain'), 'plain');
});
