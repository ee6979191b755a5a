/*
 * train.h — the training floor, internal: what AdamW, the schedules and the
 * byte-level data share beyond the public API.
 */
#ifndef MATTN_TRAIN_H
#define MATTN_TRAIN_H

#include "io/io.h"
#include "model/model.h"

#endif
