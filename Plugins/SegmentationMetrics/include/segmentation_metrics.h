/* Plain C helpers exported by the segmentation-metrics plugin (callable with `menagerie call`). */
#ifndef SEGMENTATION_METRICS_H
#define SEGMENTATION_METRICS_H
#include <stdint.h>

/* TP / (TP + FP + FN); NaN when all three are 0. */
double segmentation_metrics_iou(int64_t tp, int64_t fp, int64_t fn);
/* 2 TP / (2 TP + FP + FN); NaN when all three are 0. */
double segmentation_metrics_dice(int64_t tp, int64_t fp, int64_t fn);

#endif
