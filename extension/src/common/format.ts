/** How the extension words the protocol's numbers and times: hardware, RTT, expiry. */
import type { Environment, Hardware } from '../protocol/generated';

/** `4 CPU · 16 GiB`, with `· 1 GPU` when there are GPUs. */
export function hardwareLabel(hardware: Hardware): string {
  const parts = [`${hardware.cpus} CPU`, `${hardware.memoryGib} GiB`];
  if (hardware.gpus > 0) parts.push(`${hardware.gpus} GPU`);
  return parts.join(' · ');
}

/** `12 ms`; `<1 ms` on a fast link; `no answer` when the probe got none. */
export function rttLabel(rttMs: number | null | undefined): string {
  if (rttMs === null || rttMs === undefined || !Number.isFinite(rttMs)) return 'no answer';
  if (rttMs < 1) return '<1 ms';
  return `${Math.round(rttMs)} ms`;
}

/** `expires in 8 h`, `expires in 3 days`, `expired`, `permanent`. */
export function expiryLabel(
  environment: Pick<Environment, 'lifespan' | 'expiresAt'>,
  now: Date,
): string {
  if (environment.lifespan === 'permanent') return 'permanent';
  if (environment.expiresAt === null) return 'no expiry';
  const ms = Date.parse(environment.expiresAt) - now.getTime();
  if (Number.isNaN(ms)) return 'no expiry';
  if (ms <= 0) return 'expired';
  const minutes = Math.round(ms / 60_000);
  if (minutes < 60) return `expires in ${Math.max(minutes, 1)} min`;
  const hours = Math.round(ms / 3_600_000);
  if (hours < 48) return `expires in ${hours} h`;
  return `expires in ${Math.round(ms / 86_400_000)} days`;
}

/** A timestamp as the user's locale writes it; the text itself when it is not one. */
export function timeLabel(iso: string | null): string {
  if (iso === null) return 'never';
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? iso : at.toLocaleString();
}

/** The message of anything thrown: the daemon's JSON-RPC errors carry one sentence. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === 'string') return error;
  return String(error);
}
