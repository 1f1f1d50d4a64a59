# Shapes a Django project makes that Wagtail does not: multi-table inheritance (a child whose
# key is its parent's), a UUID primary key, PostgreSQL's arrays and ranges, intervals, bytea,
# inet, a one-to-one reference, a many-to-many to itself, a CHECK and a unique pair.
import uuid

from django.contrib.postgres.fields import ArrayField, DateRangeField
from django.db import models


class Place(models.Model):
    name = models.CharField(max_length=50)
    location = models.GenericIPAddressField(null=True)


class Restaurant(Place):
    serves_pizza = models.BooleanField(default=False)


class Keeper(models.Model):
    code = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=50, unique=True)
    mentor = models.ForeignKey("self", null=True, on_delete=models.SET_NULL)


class Animal(models.Model):
    name = models.CharField(max_length=50)
    kind = models.CharField(max_length=10, choices=[("cat", "cat"), ("dog", "dog")])
    weight = models.DecimalField(max_digits=6, decimal_places=2)
    age = models.DurationField(null=True)
    photo = models.BinaryField(null=True)
    tags = ArrayField(models.CharField(max_length=20), default=list)
    stay = DateRangeField(null=True)
    meta = models.JSONField(default=dict)
    keeper = models.ForeignKey(Keeper, null=True, on_delete=models.SET_NULL)
    home = models.OneToOneField(Place, null=True, on_delete=models.CASCADE)
    friends = models.ManyToManyField("self", blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(weight__gte=0), name="weight_positive"),
            models.CheckConstraint(condition=~models.Q(name__in=["nobody", "none"]), name="named"),
            models.UniqueConstraint(fields=["name", "kind"], name="one_name_a_kind"),
        ]
