/** Shared utilities of the PSA services. */

export * from './config';
export * from './elasticsearch';
export * from './http';
export * from './jwt';
export * from './log';
export * from './metrics';
export * from './retry';
export * from './service';
