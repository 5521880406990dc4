/**
 * RabbitMQ for the services: one amqplib connection from the RABBITMQ_* variables, a
 * confirm channel for publishing to the durable topic exchange `psa.events`, and durable
 * consumers. When the broker goes away it reconnects with backoff and re-declares
 * everything; publishes meanwhile fail (the caller decides), health reports the outage.
 *
 * A cluster (RABBITMQ_NODES=host[:port],...): each connect tries the next node in turn, a publish
 * waits for the reconnect (up to its confirm timeout) instead of failing at once, and with
 * RABBITMQ_QUEUE_TYPE=quorum the consumers' queues are declared as quorum queues (replicated on
 * the cluster's members; a confirm then means a majority of them hold the message).
 */

import { connect, ChannelModel, Channel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { backoffDelay, env, envInt, errorText, Logger, parseAddresses, sleep, withTimeout } from '@psa/utils';

/** The exchange every service publishes its events to (topic, durable). */
export const EVENTS_EXCHANGE = 'psa.events';

export interface Subscription {
  /** Durable queue name, e.g. `billing.ticket-events`. */
  queue: string;
  /** Routing-key patterns bound to EVENTS_EXCHANGE, e.g. `ticket.*`. */
  patterns: string[];
  /** Handles one message; the message is acked after it resolves, requeued if it throws. */
  handler: (routingKey: string, payload: unknown, message: ConsumeMessage) => Promise<void>;
  prefetch?: number;
}

const PUBLISH_TIMEOUT_MS = 5000;

/** host:port pairs from RABBITMQ_NODES, or the one RABBITMQ_HOST/PORT. */
export function brokerNodes(): { host: string; port: number }[] {
  const port = envInt('RABBITMQ_PORT', 5672);
  const listed = parseAddresses(process.env.RABBITMQ_NODES ?? '', port);
  return listed.length > 0 ? listed : [{ host: env('RABBITMQ_HOST', '127.0.0.1'), port }];
}

/** The arguments a consumer's queue is declared with: x-queue-type from RABBITMQ_QUEUE_TYPE, if set. */
export function queueArguments(): Record<string, unknown> {
  const type = process.env.RABBITMQ_QUEUE_TYPE ?? '';
  if (type === '' || type === 'classic') return {};
  if (type !== 'quorum') throw new Error(`RABBITMQ_QUEUE_TYPE must be classic or quorum, got ${JSON.stringify(type)}`);
  return { 'x-queue-type': 'quorum' };
}

export class RabbitClient {
  private connection: ChannelModel | undefined;
  private publisher: ConfirmChannel | undefined;
  private lastError = 'not connected yet';
  private closing = false;
  private running: Promise<void> | undefined;
  private readonly nodes = brokerNodes();
  private readonly queueArgs = queueArguments();
  private next = 0;
  private connected: (() => void)[] = [];

  constructor(private readonly log: Logger, private readonly subscriptions: Subscription[] = []) {}

  /** Begin connecting in the background; reconnects until close() is called. */
  start(): void {
    this.running ??= this.connectLoop();
  }

  /** Resolves while connected with an open publishing channel; throws the last error otherwise. */
  async check(): Promise<void> {
    if (this.connection === undefined || this.publisher === undefined) throw new Error(this.lastError);
  }

  /** Publish a persistent JSON message and wait for the broker's confirm (in a cluster, first for a
   * connection to one of its nodes, within the same timeout). */
  async publish(routingKey: string, payload: unknown, messageId: string): Promise<void> {
    if (this.publisher === undefined && this.nodes.length > 1) {
      await withTimeout(this.waitConnected(), PUBLISH_TIMEOUT_MS, 'rabbitmq reconnect').catch(() => undefined);
    }
    const channel = this.publisher;
    if (channel === undefined) throw new Error(`rabbitmq unavailable: ${this.lastError}`);
    const body = Buffer.from(JSON.stringify(payload));
    const confirmed = new Promise<void>((resolve, reject) => {
      channel.publish(EVENTS_EXCHANGE, routingKey, body, {
        persistent: true,
        contentType: 'application/json',
        messageId,
        timestamp: Math.floor(Date.now() / 1000),
      }, (err: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve()));
    });
    await withTimeout(confirmed, PUBLISH_TIMEOUT_MS, 'publisher confirm');
  }

  private waitConnected(): Promise<void> {
    return new Promise((resolve) => this.connected.push(resolve));
  }

  /** Stop reconnecting and close the connection. */
  async close(): Promise<void> {
    this.closing = true;
    const connection = this.connection;
    this.connection = undefined;
    this.publisher = undefined;
    await connection?.close().catch(() => undefined);
  }

  private async connectLoop(): Promise<void> {
    for (let attempt = 1; !this.closing; attempt += 1) {
      try {
        const closed = await this.connectOnce();
        attempt = 0;
        const reason = await closed;
        if (this.closing) return;
        this.lastError = `connection lost: ${reason}`;
        this.log.warn('rabbitmq connection lost, reconnecting', { error: reason });
      } catch (err) {
        this.lastError = errorText(err);
        const delay = backoffDelay(attempt, 250, 10_000);
        if (attempt === 1 || attempt % 10 === 0) {
          this.log.warn('rabbitmq connect failed, retrying', { error: this.lastError, attempt, delay_ms: delay });
        }
        await this.dropConnection();
        await sleep(delay);
      }
    }
  }

  /** Connect, declare, subscribe; resolves to a promise that settles with the close reason. */
  private async connectOnce(): Promise<Promise<string>> {
    const node = this.nodes[this.next % this.nodes.length] as { host: string; port: number };
    this.next += 1;  // the next attempt (after a failure or a lost connection) tries the next node
    const connection = await connect({
      protocol: 'amqp',
      hostname: node.host,
      port: node.port,
      username: env('RABBITMQ_USER', 'psa_app'),
      password: env('RABBITMQ_PASSWORD'),
      vhost: env('RABBITMQ_VHOST', '/'),
      heartbeat: 15,
    }, { timeout: 5000 });
    this.connection = connection;
    const closed = new Promise<string>((resolve) => {
      connection.on('error', (err: Error) => {
        this.lastError = errorText(err);
      });
      connection.on('close', (err?: Error) => {
        this.publisher = undefined;
        this.connection = undefined;
        resolve(err ? errorText(err) : 'closed by the broker');
      });
    });
    const publisher = await connection.createConfirmChannel();
    this.watchChannel(publisher, 'publisher');
    await publisher.assertExchange(EVENTS_EXCHANGE, 'topic', { durable: true });
    for (const subscription of this.subscriptions) {
      await this.subscribe(connection, subscription);
    }
    this.publisher = publisher;
    for (const resolve of this.connected.splice(0)) resolve();
    this.log.info('rabbitmq connected', {
      node: `${node.host}:${node.port}`, exchange: EVENTS_EXCHANGE, consumers: this.subscriptions.map((s) => s.queue),
    });
    return closed;
  }

  /** A channel that closes on its own (a channel error) takes the connection down to start clean. */
  private watchChannel(channel: Channel, role: string): void {
    channel.on('error', (err: Error) => {
      this.lastError = `${role} channel: ${errorText(err)}`;
      this.log.warn('rabbitmq channel error', { role, error: this.lastError });
    });
    channel.on('close', () => {
      if (!this.closing && this.connection !== undefined) void this.dropConnection();
    });
  }

  private async dropConnection(): Promise<void> {
    const connection = this.connection;
    this.connection = undefined;
    this.publisher = undefined;
    await connection?.close().catch(() => undefined);
  }

  private async subscribe(connection: ChannelModel, subscription: Subscription): Promise<void> {
    const channel = await connection.createChannel();
    this.watchChannel(channel, `consumer ${subscription.queue}`);
    await channel.assertQueue(subscription.queue, { durable: true, arguments: this.queueArgs });
    for (const pattern of subscription.patterns) {
      await channel.bindQueue(subscription.queue, EVENTS_EXCHANGE, pattern);
    }
    await channel.prefetch(subscription.prefetch ?? 10);
    await channel.consume(subscription.queue, (message) => {
      if (message !== null) void this.deliver(channel, subscription, message);
    });
  }

  private async deliver(channel: Channel, subscription: Subscription, message: ConsumeMessage): Promise<void> {
    const routingKey = message.fields.routingKey;
    let payload: unknown;
    try {
      payload = JSON.parse(message.content.toString('utf8'));
    } catch {
      this.log.error('dropping a message that is not JSON', { queue: subscription.queue, routing_key: routingKey });
      channel.nack(message, false, false);
      return;
    }
    try {
      await subscription.handler(routingKey, payload, message);
    } catch (err) {
      this.log.warn('message handler failed, requeueing', { queue: subscription.queue, routing_key: routingKey, error: errorText(err) });
      await sleep(1000);
      try {
        channel.nack(message, false, true);
      } catch {
        // the channel closed meanwhile: the broker requeues unacked messages itself
      }
      return;
    }
    try {
      channel.ack(message);
    } catch {
      // the channel closed meanwhile: the broker redelivers, handlers are idempotent
    }
  }
}
