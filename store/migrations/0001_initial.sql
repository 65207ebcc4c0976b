-- The store of actuals (window aggregates), predictions and scores. Times are epoch milliseconds (UTC),
-- as in the Avro records; keys are the records' natural keys, so a replay upserts the same rows.

CREATE TABLE actuals (
    sensor_id        text             NOT NULL,
    window_start_ms  bigint           NOT NULL,
    window_end_ms    bigint           NOT NULL,
    mean_speed_mph   double precision,
    min_speed_mph    double precision,
    max_speed_mph    double precision,
    stddev_speed_mph double precision,
    count            integer          NOT NULL,
    missing_count    integer          NOT NULL,
    pane_timing      text             NOT NULL,
    pane_rank        smallint         NOT NULL,  -- EARLY 0 < UNKNOWN 1 < ON_TIME 2 < LATE 3: a lower pane never overwrites
    PRIMARY KEY (sensor_id, window_start_ms)
);

CREATE TABLE predictions (
    sensor_id           text             NOT NULL,
    event_time_ms       bigint           NOT NULL,
    horizon_min         smallint         NOT NULL,
    model_version       text             NOT NULL,
    target_time_ms      bigint           NOT NULL,
    predicted_speed_mph double precision NOT NULL,
    lower_mph           double precision NOT NULL,
    upper_mph           double precision NOT NULL,
    coverage            double precision NOT NULL,
    congestion          text             NOT NULL,
    processing_time_ms  bigint           NOT NULL,
    PRIMARY KEY (sensor_id, event_time_ms, horizon_min, model_version)
);
-- History of one sensor over a time range (by target time) and retention by event time.
CREATE INDEX predictions_sensor_target ON predictions (sensor_id, target_time_ms);
CREATE INDEX predictions_event_time ON predictions (event_time_ms);

CREATE TABLE scores (
    sensor_id           text             NOT NULL,
    event_time_ms       bigint           NOT NULL,
    horizon_min         smallint         NOT NULL,
    model_version       text             NOT NULL,
    target_time_ms      bigint           NOT NULL,
    predicted_speed_mph double precision NOT NULL,
    lower_mph           double precision NOT NULL,
    upper_mph           double precision NOT NULL,
    coverage            double precision NOT NULL,
    actual_speed_mph    double precision,
    error_mph           double precision,
    inside_interval     boolean,
    status              text             NOT NULL CHECK (status IN ('SCORED', 'MISSING')),
    scored_time_ms      bigint           NOT NULL,
    PRIMARY KEY (sensor_id, event_time_ms, horizon_min, model_version)
);
CREATE INDEX scores_sensor_target ON scores (sensor_id, target_time_ms);
-- Network-wide rolling accuracy: the last hour / day of target times.
CREATE INDEX scores_target ON scores (target_time_ms);
