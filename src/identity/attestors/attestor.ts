import type { AgentRecord } from '../../storage/agents-repo.js';

/** What a WIT request brings to prove who it is. */
export interface AttestationEvidence {
  /** The `attestation` object of the request body (its `type` names the attestor). */
  attestation: { type: string; token?: string };
  /** `Workload-Identity-Token` and `Workload-Proof-Token` headers, for WIT renewal. */
  wit?: string;
  wpt?: string;
}

/** The attestor's configuration in the agent's registration (an entry of `attestors`). */
export type AttestorConfig = AgentRecord['attestors'][number];

export interface AttestationResult {
  /** A short description of what was proven, for the decision record. */
  detail: string;
  /** The checksum bound in a WIT used for renewal, carried over unless a new one is presented. */
  agentChecksum?: string;
  /** The WIT this one renews: revoking it revokes the renewal too. */
  renews?: string;
}

/** Attestation refused: `message` is safe to show to the caller. */
export class AttestationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AttestationError';
  }
}

/**
 * One way for an agent to prove it is the workload it claims to be before it gets a WIT.
 * Each attestor lives in its own module; a new kind (TPM, cloud instance identity) is a new module
 * registered in `attestors/index.ts`.
 */
export interface Attestor {
  readonly type: string;
  /** Throws {@link AttestationError} when the evidence does not prove `agent` under `config`. */
  attest(agent: AgentRecord, config: AttestorConfig, evidence: AttestationEvidence): Promise<AttestationResult>;
}
